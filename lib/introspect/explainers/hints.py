"""The input-ablation (hint) explainer: prompts, training examples, training and prediction (appendix D, F.3).

The explainer reads the hinted conversation plus "If the hint were removed how would the assistant answer
change?" and writes "The most likely output would change to <<<Answer: X>>>." or "The output would remain
unchanged from <<<Answer: X>>>." where X = the target's answer without the hint. It reads no vector: this
task is plain supervised text.
"""

from __future__ import annotations

from typing import Sequence

import polars as pl

from introspect.explainers.model import Encoded, encode
from introspect.explainers.statements import causal_explanation
from introspect.explainers.training import ExplainerData
from introspect.groundtruth.hints import SYSTEM_PROMPT, user_turn

EXPLAIN_QUESTION = "If the hint were removed how would the assistant answer change?"


# Appendix F.3: what the untrained explainer is told after the question.
UNTRAINED_INSTRUCTIONS = (
    "Respond with exactly one of the two options below, and nothing else:\n\n"
    "The output would remain unchanged from <<<Answer: X>>>.\nThe output would change to <<<Answer: X>>>.\n\n"
    "Replace X with the answer letter (A, B, C, or D).\nDo not include any explanations, reasoning, or extra "
    "text.\n\nExample outputs:\nThe output would remain unchanged from <<<Answer: C>>>.\n"
    "The output would change to <<<Answer: B>>>."
)


VARIANTS = ("trained", "untrained")


def hint_explanation(row: dict) -> str:
    """The explanation the explainer learns: whether removing the hint changes the answer, and to what."""
    return causal_explanation(bool(row["has_changed"]), f"Answer: {row['answer_plain']}")


def explainer_prompt(row: dict, variant: str) -> str:
    """The user turn the explainer reads (the system prompt is passed separately)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown hint-task variant {variant!r}; use one of {VARIANTS}")
    text = f"{user_turn(row, row['hint'])}\n\n{EXPLAIN_QUESTION}"
    return f"{text}\n\n{UNTRAINED_INSTRUCTIONS}" if variant == "untrained" else text


def hint_examples(df: pl.DataFrame, tokenizer, variant: str, chat: bool, with_targets: bool = True) -> ExplainerData:
    """Encode dataset rows as (text-only) explainer examples."""
    items: list[Encoded] = [
        encode(tokenizer, explainer_prompt(row, variant), hint_explanation(row) if with_targets else None, chat,
               system=SYSTEM_PROMPT)
        for row in df.iter_rows(named=True)
    ]
    return ExplainerData(items, None, [0] * len(items))


def item_ids(df: pl.DataFrame) -> list[str]:
    return df["question_id"].to_list()


def predictions_frame(test: pl.DataFrame, predictions: Sequence[str]) -> pl.DataFrame:
    return pl.DataFrame({
        "item_id": item_ids(test),
        "subject": test["subject"],
        "hint_letter": test["hint_letter"],
        "gold": [hint_explanation(r) for r in test.iter_rows(named=True)],
        "prediction": list(predictions),
    })


def train_hint_explainer(dataset: pl.DataFrame, model_dir: str, out_dir: str, chat: bool, train: dict, seed: int,
                         device: str = "cpu", checkpoint_every: int = 0) -> list[float]:
    """Fine-tune an explainer on the train split (text only) and save the checkpoint; returns the losses."""
    from introspect.explainers.training import fit_explainer, train_split

    rows = train_split(dataset, f"hint ({out_dir})")
    return fit_explainer(rows, model_dir, out_dir, lambda df, tok: hint_examples(df, tok, "trained", chat),
                         {"target_hidden": None, "chat": chat}, train, seed, device,
                         metadata={"task": "hints", "variant": "trained"}, checkpoint_every=checkpoint_every)


def predict_hints(dataset: pl.DataFrame, explainer_path: str, variant: str, chat: bool, evaluation: dict,
                  seed: int, device: str = "cpu", dtype: str = "float32") -> pl.DataFrame:
    """Explain the (sampled) test split with a checkpoint, or with an untrained model folder (`dtype`:
    compute.dtype)."""
    from introspect.explainers.generation import predict
    from introspect.explainers.model import ExplainerSettings, build_explainer, load_explainer
    from introspect.explainers.training import subsample

    test = subsample(dataset.filter(pl.col("split") == "test"), evaluation["max_test"], seed)
    if variant == "untrained":
        explainer = build_explainer(explainer_path, ExplainerSettings(target_hidden=None, chat=chat), device=device)
    else:
        explainer = load_explainer(explainer_path, device=device)
    data = hint_examples(test, explainer.tokenizer, variant, chat, with_targets=False)
    outputs = predict(explainer, data, evaluation["batch_size"], evaluation["max_new_tokens"], dtype)
    return predictions_frame(test, outputs)
