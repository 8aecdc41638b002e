"""The activation-patching explainer: prompts, training examples, training and prediction (paper appendix D, F.2).

The explainer reads x, the patched token x_t, the layer block and the vector v, and answers "The most
likely output would change to <<<X>>>." or "The output would remain unchanged from <<<X>>>." Ablations
(Table 2) drop the vector, the layer or the token from the prompt; the untrained variant gets the F.2
instructions instead of training.
"""

from __future__ import annotations

import random
from typing import Sequence

import polars as pl
import torch

from introspect.explainers.generation import predict
from introspect.explainers.model import VECTOR_SLOT, Encoded, encode
from introspect.explainers.statements import causal_explanation
from introspect.explainers.training import ExplainerData, fit_explainer, subsample, train_split

# Appendix D, activation patching: the five question templates, each with how it words the layer clause
# and the preposition of the token clause. Fields: {vector} ([s] v [e]), {layer}, {token}, {text}; each
# removable clause is its own field so that an ablation drops exactly that clause.
PATCHING_PROMPTS = (
    ("If feature{vector}{layer} is added{token} when processing the text <<<{text}>>>, how would the output change?",
     " at layer {}", "to"),
    ("When feature{vector}{layer} is added{token} in the input <<<{text}>>>, what happens to the model's output?",
     " at layer {}", "at"),
    ("Consider the input text: <<<{text}>>>. If we steer{layer} towards feature{vector}{token}, how does this "
     "affect the generated continuation?", " layer {}", "at"),
    ("Given the text <<<{text}>>>, what would be the effect on the output if feature{vector}{layer} is "
     "added{token}?", " at layer {}", "to"),
    ("If we steer towards feature{vector}{layer}{token} when processing <<<{text}>>>, how would the model's "
     "response differ?", " at layer {}", "and"),
)


# Appendix F.2: the untrained baseline's prompt (same fields).
PATCHING_UNTRAINED = (
    "If feature{vector}{layer} is inserted{token} when processing the text <<<{text}>>>, how would the output "
    "change?\nRespond with exactly one of the two options below, and nothing else:\n\n"
    "The output would remain unchanged from <<<X>>>.\nThe output would change to <<<X>>>.\n\n"
    "Replace X with the next token of the answer following the input. Make sure X is a *single* next token.\n\n"
    "Example Outputs:\nThe output would remain unchanged from <<<Paris>>>.\nThe output would change to <<<doctor>>>.\n"
    "The output would remain unchanged from <<<Apple>>>.\nThe output would change to <<<unknown>>>.",
    " at layer {}", "into",
)


VARIANTS = ("trained", "no_activation", "no_layer", "no_token", "untrained")


def patching_question(template: tuple[str, str, str], text: str, layer: str, token: str,
                      variant: str = "trained") -> str:
    """One explainer question; the variant decides which clauses stay (Table 2's ablations)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; use one of {VARIANTS}")
    body, layer_clause, preposition = template
    return body.format(
        vector="" if variant == "no_activation" else f" {VECTOR_SLOT}",
        layer="" if variant == "no_layer" else layer_clause.format(layer),
        token="" if variant == "no_token" else f" {preposition} tokens {token!r}",
        text=text,
    )


def patching_target_text(row: dict) -> str:
    """The explanation the explainer learns for one sweep row."""
    return causal_explanation(bool(row["has_changed"]), row["patched_continuation"].strip())


def chunk_text(layers: Sequence[int]) -> str:
    return f"{layers[0]}-{layers[-1]}" if len(layers) > 1 else str(layers[0])


def patching_examples(df: pl.DataFrame, tokenizer, variant: str, chat: bool, seed: int,
                      with_targets: bool = True) -> ExplainerData:
    """Encode dataset rows as explainer examples (one appendix-D template drawn per row, seeded)."""
    rng = random.Random(seed)
    items: list[Encoded] = []
    for row in df.iter_rows(named=True):
        template = PATCHING_UNTRAINED if variant == "untrained" else rng.choice(PATCHING_PROMPTS)
        question = patching_question(template, row["prompt"], chunk_text(row["layers"]), row["token"], variant)
        items.append(encode(tokenizer, question, patching_target_text(row) if with_targets else None, chat))
    vectors = torch.from_numpy(df["vector"].to_numpy().copy()) if df.height else None
    return ExplainerData(items, vectors, df["chunk"].to_list())


def item_ids(df: pl.DataFrame) -> list[str]:
    """A stable id per patching row, the same for every explainer (pairs rows for the paired t-test)."""
    return [f"{p}:{t}:{c}" for p, t, c in zip(df["pair_id"], df["orig_pos"], df["chunk"])]


def predictions_frame(test: pl.DataFrame, predictions: list[str]) -> pl.DataFrame:
    return pl.DataFrame({
        "item_id": item_ids(test),
        "token_type": test["token_type"],
        "chunk": test["chunk"],
        "gold": [patching_target_text(r) for r in test.iter_rows(named=True)],
        "prediction": predictions,
    })


def train_patching_explainer(dataset: pl.DataFrame, model_dir: str, out_dir: str, variant: str,
                             target_hidden: int, projection: str, chat: bool, train: dict, seed: int,
                             device: str = "cpu", checkpoint_every: int = 0) -> list[float]:
    """Fine-tune an explainer on the train split and save the checkpoint; returns the step losses."""
    rows = train_split(dataset, f"patching ({out_dir})")
    settings = {"target_hidden": target_hidden, "layers": tuple(sorted(set(rows["chunk"].to_list()))),
                "projection": projection, "chat": chat}
    return fit_explainer(rows, model_dir, out_dir, lambda df, tok: patching_examples(df, tok, variant, chat, seed),
                         settings, train, seed, device, metadata={"task": "patching", "variant": variant},
                         checkpoint_every=checkpoint_every)


def predict_patching(dataset: pl.DataFrame, explainer_path: str, variant: str, target_hidden: int, chat: bool,
                     evaluation: dict, seed: int, device: str = "cpu", dtype: str = "float32") -> pl.DataFrame:
    """Explain the (sampled) test split with a checkpoint, or with an untrained model folder (`dtype`:
    compute.dtype)."""
    from introspect.explainers.model import ExplainerSettings, build_explainer, load_explainer

    test = subsample(dataset.filter(pl.col("split") == "test"), evaluation["max_test"], seed)
    if variant == "untrained":
        chunks = tuple(sorted(set(test["chunk"].to_list())))
        explainer = build_explainer(explainer_path, ExplainerSettings(target_hidden=target_hidden, layers=chunks,
                                                                      projection="none", chat=chat), device=device)
    else:
        explainer = load_explainer(explainer_path, device=device)
    data = patching_examples(test, explainer.tokenizer, variant, chat, seed, with_targets=False)
    outputs = predict(explainer, data, evaluation["batch_size"], evaluation["max_new_tokens"], dtype)
    return predictions_frame(test, outputs)
