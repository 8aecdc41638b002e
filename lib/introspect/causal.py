"""Explainer prompts, training examples and predictions for the causal tasks (paper appendix D, F.2, F.3).

Activation patching: the explainer reads x, the patched token x_t, the layer block and the vector v, and
answers "The most likely output would change to <<<X>>>." or "The output would remain unchanged from
<<<X>>>." Ablations (Table 2) drop the vector, the layer or the token from the prompt.
"""

from __future__ import annotations

import dataclasses
import logging
import random
from typing import Sequence

import polars as pl
import torch

from introspect.evaluation import causal_explanation
from introspect.explainer import VECTOR_SLOT, Encoded, VectorExplainer, collate, encode
from introspect.training import ExplainerData

log = logging.getLogger(__name__)

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


@torch.no_grad()
def predict(explainer: VectorExplainer, data: ExplainerData, batch_size: int = 16,
            max_new_tokens: int = 24) -> list[str]:
    """Greedy explanations for every example (left-padded batches, longest first to waste little padding)."""
    explainer.eval()
    order = sorted(range(len(data)), key=lambda i: -len(data.items[i].input_ids))
    out: dict[int, str] = {}
    pad = explainer.tokenizer.pad_token_id
    for start in range(0, len(order), batch_size):
        index = order[start:start + batch_size]
        batch = data.batch(index, pad, left_pad=True).to(explainer.device)
        for i, text in zip(index, explainer.generate(batch, max_new_tokens=max_new_tokens)):
            out[i] = text
    return [out[i] for i in range(len(data))]


# ----------------------------------------------------------------------------------------------
# one explainer run: train on the train split, predict the test split


def item_ids(df: pl.DataFrame) -> list[str]:
    """A stable id per patching row, the same for every explainer (pairs rows for the paired t-test)."""
    return [f"{p}:{t}:{c}" for p, t, c in zip(df["pair_id"], df["orig_pos"], df["chunk"])]


def subsample(df: pl.DataFrame, n: int | None, seed: int) -> pl.DataFrame:
    """At most `n` rows, drawn with a seed (the whole frame when n is None or larger)."""
    if n is None or df.height <= n:
        return df
    return df.sample(n=n, seed=seed, shuffle=False)


def predictions_frame(test: pl.DataFrame, predictions: list[str]) -> pl.DataFrame:
    return pl.DataFrame({
        "item_id": item_ids(test),
        "token_type": test["token_type"],
        "chunk": test["chunk"],
        "gold": [patching_target_text(r) for r in test.iter_rows(named=True)],
        "prediction": predictions,
    })


def fit_explainer(rows: pl.DataFrame, model_dir: str, out_dir: str, examples, settings: dict, train: dict,
                  seed: int, device: str = "cpu", metadata: dict | None = None,
                  projection_weights: dict[int, torch.Tensor] | None = None) -> list[float]:
    """Fine-tune a fresh explainer on `rows` (seeded subsample of `max_train`) and save the checkpoint.

    `examples(rows, tokenizer)` encodes the rows; `settings` holds the task's ExplainerSettings fields
    (target_hidden, layers, projection, chat); `train` is the config's train section. Returns step losses.
    """
    from introspect.explainer import ExplainerSettings, build_explainer
    from introspect.training import TrainSettings, train_explainer

    train = dict(train)
    max_train = train.pop("max_train", None)
    train.pop("projection", None)
    tuning = train.pop("tuning")
    lora = {k: train.pop(k) for k in ("lora_r", "lora_alpha", "lora_dropout", "train_embeddings", "vector_norm")
            if k in train}
    rows = subsample(rows, max_train, seed)
    torch.manual_seed(seed)
    explainer = build_explainer(model_dir, ExplainerSettings(tuning=tuning, **settings, **lora), device=device,
                                projection_weights=projection_weights)
    data = examples(rows, explainer.tokenizer)
    if "has_changed" in rows.columns:
        log.info("training on %d examples (%d changed)", len(data), int(rows["has_changed"].sum()))
    else:
        log.info("training on %d examples", len(data))
    history = train_explainer(explainer, data, TrainSettings(**train, seed=seed))
    explainer.save(out_dir, metadata={**(metadata or {}), "losses": history, "n_train": len(data)})
    return history


def train_split(dataset: pl.DataFrame, what: str) -> pl.DataFrame:
    """The train split, or an error that says why there is nothing to learn from."""
    rows = dataset.filter(pl.col("split") == "train")
    if rows.height == 0:
        raise ValueError(f"the {what} dataset has no train rows; its balanced train split is empty (a target "
                         "whose outputs never change loses every row to balancing)")
    return rows


def train_patching_explainer(dataset: pl.DataFrame, model_dir: str, out_dir: str, variant: str,
                             target_hidden: int, projection: str, chat: bool, train: dict, seed: int,
                             device: str = "cpu") -> list[float]:
    """Fine-tune an explainer on the train split and save the checkpoint; returns the step losses."""
    rows = train_split(dataset, f"patching ({out_dir})")
    settings = {"target_hidden": target_hidden, "layers": tuple(sorted(set(rows["chunk"].to_list()))),
                "projection": projection, "chat": chat}
    return fit_explainer(rows, model_dir, out_dir, lambda df, tok: patching_examples(df, tok, variant, chat, seed),
                         settings, train, seed, device, metadata={"task": "patching", "variant": variant})


def predict_patching(dataset: pl.DataFrame, explainer_path: str, variant: str, target_hidden: int, chat: bool,
                     evaluation: dict, seed: int, device: str = "cpu") -> pl.DataFrame:
    """Explain the (sampled) test split with a checkpoint, or with an untrained model folder."""
    from introspect.explainer import ExplainerSettings, build_explainer, load_explainer

    test = subsample(dataset.filter(pl.col("split") == "test"), evaluation["max_test"], seed)
    if variant == "untrained":
        chunks = tuple(sorted(set(test["chunk"].to_list())))
        explainer = build_explainer(explainer_path, ExplainerSettings(target_hidden=target_hidden, layers=chunks,
                                                                      projection="none", chat=chat), device=device)
    else:
        explainer = load_explainer(explainer_path, device=device)
    data = patching_examples(test, explainer.tokenizer, variant, chat, seed, with_targets=False)
    outputs = predict(explainer, data, evaluation["batch_size"], evaluation["max_new_tokens"])
    return predictions_frame(test, outputs)


def causal_table(rows: Sequence[tuple[str, str, str]], predictions: Sequence[pl.DataFrame],
                 group_by: str = "target") -> pl.DataFrame:
    """A causal task's table: each (target, explainer, variant) row's metrics, best marked per group.

    Table 2 groups by target (which explainer explains a target best; rows share the target's test items,
    so best = paired t-test); Table 3 by explainer (which target an explainer explains best; rows are on
    different targets' items, so best = Welch's unpaired t-test). Besides the three metrics: n_invalid (unparseable outputs),
    said_changed (% of outputs predicting a change) and content match on the items whose gold changed /
    did not (the paper's analysis of untrained explainers, section 5.2).
    """
    from introspect.evaluation import score_causal
    from introspect.tables import build_metric_table, long_scores

    if group_by not in ("target", "explainer"):
        raise ValueError(f"group_by must be 'target' or 'explainer', got {group_by!r}")
    long, aggregates, extra = [], [], []
    for (target, explainer, variant), df in zip(rows, predictions):
        group = target if group_by == "target" else explainer
        label = f"{explainer if group_by == 'target' else target} ({variant})"
        scores = score_causal(df["prediction"].to_list(), df["gold"].to_list())
        per_item = {k: scores[k] for k in ("exact", "content", "changed_correct")}
        long.append(long_scores(per_item, row=label, item_ids=df["item_id"].to_list(), group=group))
        aggregates.append({"group": group, "row": label, "metric": "has_changed_f1",
                           "mean": scores["has_changed_f1"], "se": scores["has_changed_f1_se"]})
        extra.append({"group": group, "row": label, "target": target, "explainer": explainer, "variant": variant,
                      "n_invalid": scores["n_invalid"], "said_changed": scores["pred_changed_share"],
                      "content_changed": scores["content_match_changed"],
                      "content_unchanged": scores["content_match_unchanged"]})
    table = build_metric_table(pl.concat(long), ["exact", "has_changed_f1", "content"],
                               aggregates=pl.DataFrame(aggregates), proxies={"has_changed_f1": "changed_correct"},
                               scale=100, paired=group_by == "target")
    shares = ["said_changed", "content_changed", "content_unchanged"]
    extra = pl.DataFrame(extra).drop(group_by).with_columns(pl.col(shares).round(1))  # group says it already
    return table.join(extra, on=["group", "row"], how="left", maintain_order="left")


def table2_frame(rows: Sequence[tuple[str, str, str]], predictions: Sequence[pl.DataFrame]) -> pl.DataFrame:
    """Table 2: per target, each (explainer, variant) row's metrics with the paper's bold marking."""
    return causal_table(rows, predictions, group_by="target")


CAUSAL_TABLES = {
    "table2": ("Table 2: activation-patching outcomes explained (exact match, has-changed F1, content match)",
               "target", "explainer (variant)", "the same target"),
    "table3": ("Table 3: input-ablation (hint) outcomes explained (exact match, has-changed F1, content match); "
               "sorted by explainer, as in the paper", "explainer", "target (variant)", "the same explainer"),
}
TESTS = {
    "table2": "paired t-test, p >= 0.05",
    "table3": "Welch's unpaired t-test, p >= 0.05, as rows of one explainer are scored on different targets' items",
}


def write_causal_table(table: pl.DataFrame, csv_path: str, md_path: str, name: str) -> None:
    """Write Table 2 or 3 (built by :func:`causal_table`) as CSV and Markdown; values are already in %."""
    from introspect.tables import write_table

    title, group, row, scope = CAUSAL_TABLES[name]
    write_table(
        table, csv_path, md_path, title=title,
        labels={"group": group, "row": row, "exact": "exact match", "has_changed_f1": "has-changed F1",
                "content": "content match"},
        notes=[f"mean ± SE in % over the test items; bold: not significantly different from the best entry of {scope} "
               f"({TESTS[name]}; for F1 on per-item has-changed correctness).",
               "n_invalid: unparseable outputs (scored as wrong); said_changed: % of outputs predicting a change; "
               "content_changed / content_unchanged: content match (%) on items whose output did / did not change."],
    )
