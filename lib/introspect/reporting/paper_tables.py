"""The paper's tables as frames: Tables 1 and 4 (features), 2 and 3 (causal explainers), 5, 6 and 7 (data).

Each function takes the per-item predictions or statistics that its rule reads and returns the table as a
polars DataFrame; :mod:`introspect.reporting.tables` writes it as CSV and Markdown. Nothing here imports torch.
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import polars as pl

from introspect.names import CORRELATION_NOTES, check_correlation, is_selfie
from introspect.schemas import TOKEN_TYPES

log = logging.getLogger(__name__)


TABLE1_METRICS = ("sae_judge", "sae_simulator", "act_simulator", "dact_simulator")


def table1_frame(scores: pl.DataFrame, alpha: float = 0.05, metrics: Sequence[str] = TABLE1_METRICS) -> pl.DataFrame:
    """Table 1 from long per-item scores (row, item_id, metric, value): mean +- SE x 100 per row and metric,
    best by paired t-test among the rows that have the metric (gold labels have SAE columns only)."""
    from introspect.reporting.tables import build_metric_table

    rows = list(dict.fromkeys(scores["row"].to_list()))
    table = pl.DataFrame({"row": rows})
    for metric in metrics:
        part = scores.filter(pl.col("metric") == metric)
        if part.height == 0:
            continue
        built = build_metric_table(part, [metric], scale=100.0, alpha=alpha).drop("n")
        table = table.join(built, on="row", how="left", maintain_order="left")
    return table


def answer_diversity(predictions: pl.DataFrame, items: pl.DataFrame) -> dict[str, int]:
    """How many different descriptions a method gave for the held-out SAE items, and how many equal the gold
    label (whitespace and case ignored): a collapsed explainer (one answer for every vector, which the
    embedding judge still credits when the answer has the labels' form) shows up here, not in the means."""
    def norm(text):
        return " ".join(str(text).split()).lower()

    gold = dict(zip(items["item_id"].to_list(), items["label"].to_list()))
    answers = predictions.select("item_id", "prediction").unique("item_id", keep="first", maintain_order=True)
    missing = set(gold) - set(answers["item_id"].to_list())
    if missing:
        raise ValueError(f"{len(missing)} held-out items have no prediction (e.g. {sorted(missing)[0]}); rebuild "
                         "the method's predictions")
    answers = answers.filter(pl.col("item_id").is_in(list(gold)))
    ids, texts = answers["item_id"].to_list(), [norm(t) for t in answers["prediction"].to_list()]
    return {"items": len(ids), "distinct": len(set(texts)),
            "exact": sum(t == norm(gold[i]) for i, t in zip(ids, texts))}


FEATURE_TABLE_LABELS = {"sae_judge": "SAE (judge)", "sae_simulator": "SAE (simulator)",
                        "act_simulator": "ACT (simulator)", "dact_simulator": "dACT (simulator)",
                        "sae_distinct": "SAE distinct answers", "sae_exact": "SAE exact label"}


def explainer_recipe(settings: dict, align: str = "depth", explainer_hidden: int | None = None) -> str:
    """How a trained explainer reads v, against the paper's recipe, from its checkpoint's settings (the
    ``settings`` of its explainer.json) and the run's `align` (what a pre-trained Pi_l was fitted onto).

    The paper's: full fine-tuning of every weight (embeddings included), v written over the placeholder as it
    is (no rescaling), no Pi_l between equal hidden sizes and a randomly initialised one between different
    sizes; the paper also has LoRA runs (Pi_l trained by low-rank updates, its footnote 6) and a Pi_l
    pre-trained onto the same relative depth. ``"paper"`` (with those variants named, e.g. ``"paper: LoRA"``)
    when nothing else differs; otherwise ``"not the paper's: "`` and every difference, e.g. ``"not the
    paper's: v rescaled to norm 3.21, embeddings frozen"``."""
    other, variants = [], []
    tuning, projection = settings.get("tuning", "full"), settings.get("projection", "none")
    projection_tuning = settings.get("projection_tuning", "auto")
    if tuning == "lora":
        variants.append("LoRA")
    elif not settings.get("train_embeddings", True):
        other.append("embeddings frozen")
    if projection != "none" and projection_tuning not in ("auto", tuning):
        other.append("Pi_l trained in full under LoRA" if tuning == "lora" else "Pi_l trained by low-rank updates")
    if projection == "random":
        if explainer_hidden is not None and explainer_hidden == settings.get("target_hidden"):
            other.append("random Pi_l between equal hidden sizes")
        else:
            variants.append("random Pi_l")
    elif projection == "pretrained":
        if align == "input":
            other.append("Pi_l pre-trained onto the input embedding")
        else:
            variants.append("Pi_l pre-trained at the same depth")
    norm = settings.get("vector_norm")
    if norm is not None:
        other.append(f"v rescaled to norm {norm:.3g}" if isinstance(norm, (int, float)) else
                     f"v rescaled ({norm})")
    details = other + variants
    return ("not the paper's" if other else "paper") + (f": {', '.join(details)}" if details else "")


def feature_table(scores: dict[str, pl.DataFrame], predictions: dict[str, pl.DataFrame], items: pl.DataFrame,
                  names: dict[str, str], metrics: Sequence[str], n_train: dict[str, int | None] | None = None,
                  recipes: dict[str, str | None] | None = None) -> pl.DataFrame:
    """Table 1 or Table 4: each method's per-item scores (long frames, in row order) as mean +- SE x 100 with
    the paper's bold, plus its number of distinct answers and of exact gold labels on the held-out SAE items,
    and n_invalid, the judge / simulator replies behind the table's columns that were not a valid answer (the
    scores frames' ``n_invalid`` column, summed over the table's metrics).

    `names` maps a method to its row name (baselines get their display names); SelfIE, which has several
    candidates per item (one per scale), has no single answer to count. `n_train` and `recipes` (per method;
    a method left out gets an empty cell) become the last columns, ``n_train`` (before n_invalid) and
    ``recipe``: an explainer's training features and recipe (:func:`explainer_recipe`), a nearest-neighbour
    baseline's bank size."""
    missing = [method for method, df in scores.items() if "n_invalid" not in df.columns]
    if missing:
        raise ValueError(f"the scores of {', '.join(missing)} have no n_invalid column (written before invalid "
                         "replies were counted); re-run their features_score jobs")
    long = pl.concat([df.select("item_id", "metric", "value", pl.col("n_invalid").cast(pl.Int64))
                      .with_columns(row=pl.lit(names.get(method, method))) for method, df in scores.items()])
    long = long.filter(pl.col("metric").is_in(list(metrics)))
    table = table1_frame(long.select("row", "item_id", "metric", "value"), metrics=metrics)
    diversity = []
    for method, df in predictions.items():
        if is_selfie(method):  # best of its scales: every scale's description is a candidate, not one answer
            continue
        counts = answer_diversity(df, items)
        log.info("%s: %d distinct answers, %d exact gold labels for %d held-out SAE features", method,
                 counts["distinct"], counts["exact"], counts["items"])
        diversity.append({"row": names.get(method, method), "sae_distinct": counts["distinct"],
                          "sae_exact": counts["exact"]})
    counts = pl.DataFrame(diversity, schema={"row": pl.String, "sae_distinct": pl.Int64, "sae_exact": pl.Int64})
    invalid = long.group_by("row").agg(n_invalid=pl.col("n_invalid").sum().cast(pl.Int64))
    about = pl.DataFrame({"row": [names.get(m, m) for m in scores], "n_train": [(n_train or {}).get(m) for m in scores],
                          "recipe": [(recipes or {}).get(m) for m in scores]},
                         schema={"row": pl.String, "n_train": pl.Int64, "recipe": pl.String})
    table = (table.join(counts, on="row", how="left", maintain_order="left")
             .join(invalid, on="row", how="left", maintain_order="left")
             .with_columns(pl.col("n_invalid").fill_null(0))
             .join(about, on="row", how="left", maintain_order="left"))
    return table.select([c for c in table.columns if c not in ("n_invalid", "recipe")] + ["n_invalid", "recipe"])


def write_feature_table(table: pl.DataFrame, csv_path: str, md_path: str, *, title: str, target: str, judge: str,
                        simulator: str, metrics: Sequence[str], n_items: int,
                        correlation: str = "concatenated") -> None:
    """Write Table 1 or 4 (built by :func:`feature_table`) as CSV and Markdown, with its notes; a table with
    simulator columns names the simulator score's definition (`correlation`, features.simulator.correlation) in
    its title and notes."""
    from introspect.reporting.tables import write_table

    simulated = any(m.endswith("_simulator") for m in metrics)
    definition = CORRELATION_NOTES[check_correlation(correlation)]
    write_table(
        table, csv_path, md_path,
        title=f"{title}: describing {target}'s features (mean ± SE x 100"
              + (f"; simulator score: {correlation}" if simulated else "") + ")",
        notes=[f"LM judge: {judge} backend"
               + (f"; simulator: {simulator} backend, score = {definition}, on the held-out half of each item's "
                  "exemplars" if simulated else "")
               + ". SelfIE: the best of its scales per item (an upper bound, as in the paper). Bold: not significantly "
               "worse than the best row of the column (paired t-test, p >= 0.05). Distinct answers / exact label: "
               f"how many different descriptions a method gave for the {n_items} held-out SAE features and how "
               "many equal the gold label (case and spaces ignored); a trained explainer that answers the same "
               "thing for every vector has 1.",
               "recipe: how an explainer reads v; paper = the paper's (full fine-tuning of every weight, v written "
               "over the placeholder as it is, Pi_l only between different hidden sizes, randomly initialised; "
               "its variants named: LoRA, Pi_l pre-trained at the same depth); not the paper's: what differs. "
               "n_train: the training features an explainer was trained on (its checkpoint's count) or a "
               "nearest-neighbour baseline searches (its bank: the table's training sample); empty for SelfIE "
               "(untrained) and the gold labels.",
               "n_invalid: judge and simulator replies behind the row's columns that were not a valid answer "
               "(an item whose replies were all invalid scores 0); they are not cached, so re-running the scoring "
               "job asks for them again."],
        labels=FEATURE_TABLE_LABELS,
    )


def causal_table(rows: Sequence[tuple[str, str, str]], predictions: Sequence[pl.DataFrame],
                 group_by: str = "target") -> pl.DataFrame:
    """A causal task's table: each (target, explainer, variant) row's metrics, best marked per group.

    Table 2 groups by target (which explainer explains a target best; rows share the target's test items,
    so best = paired t-test); Table 3 by explainer (which target an explainer explains best; rows are on
    different targets' items, so best = Welch's unpaired t-test). Besides the three metrics: n_invalid (unparseable outputs),
    said_changed (% of outputs predicting a change) and content match on the items whose gold changed /
    did not (the paper's analysis of untrained explainers, section 5.2).
    """
    from introspect.reporting.tables import build_metric_table, long_scores
    from introspect.scoring.causal import score_causal

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


def table3_frame(rows: Sequence[tuple[str, str, str]], predictions: Sequence[pl.DataFrame]) -> pl.DataFrame:
    """Table 3: per explainer (the paper sorts this table by explainer), each target's metrics, best marked."""
    from introspect.reporting.paper_tables import causal_table

    first = {}
    for _, explainer, _ in rows:
        first.setdefault(explainer, len(first))
    order = sorted(range(len(rows)), key=lambda i: first[rows[i][1]])  # stable: config order within one
    return causal_table([rows[i] for i in order], [predictions[i] for i in order], group_by="explainer")


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
    from introspect.reporting.tables import write_table

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


def table5(entries: Sequence[dict]) -> pl.DataFrame:
    """One row per (target, explainer): per-layer statistics averaged over layers, in percent."""
    out = []
    for entry in entries:
        layers = entry["layers"]

        def mean(key):
            values = [l[key] for l in layers if l[key] is not None]
            return round(100 * float(np.mean(values)), 2) if values else None

        out.append({"target": entry["target"], "explainer": entry["explainer"],
                    "layers": ", ".join(f"{l['layer']}->{l['explainer_layer']}" for l in layers),
                    "projection": layers[0]["projection"] if layers else "none",
                    "sae_pattern_similarity": mean("pattern_mean"), "sae_pattern_sd": mean("pattern_sd"),
                    "dot_product_similarity": mean("dot_mean"), "dot_product_sd": mean("dot_sd"),
                    "tokens": sum(l["tokens"] for l in layers), "features": sum(l["features"] for l in layers)})
    return pl.DataFrame(out, schema={"target": pl.String, "explainer": pl.String, "layers": pl.String,
                                     "projection": pl.String, "sae_pattern_similarity": pl.Float64,
                                     "sae_pattern_sd": pl.Float64, "dot_product_similarity": pl.Float64,
                                     "dot_product_sd": pl.Float64, "tokens": pl.Int64, "features": pl.Int64})


def table6(datasets: dict[str, pl.DataFrame]) -> pl.DataFrame:
    """Rows per target x split x token type x layer chunk, with the unchanged / changed counts (Table 6).

    The five named token types come first; every other token is its own type (appendix E.2).
    """
    import polars as pl

    frames = []
    for target, df in datasets.items():
        counts = (
            df.with_columns(pl.col("layers").list.eval(pl.element().cast(pl.String)).list.join(",").alias("layer"))
            .group_by(["split", "token_type", "chunk", "layer"])
            .agg(unchanged=(~pl.col("has_changed")).sum().cast(pl.Int64),
                 changed=pl.col("has_changed").sum().cast(pl.Int64))
            .with_columns(pl.lit(target).alias("target"))
        )
        frames.append(counts)
    table = pl.concat(frames)
    rank = {name: i for i, name in enumerate(TOKEN_TYPES)}
    table = table.with_columns(
        pl.col("split").replace_strict({"train": 0, "test": 1}, return_dtype=pl.Int64).alias("_split"),
        pl.col("token_type").replace_strict(rank, default=len(rank), return_dtype=pl.Int64).alias("_type"),
    ).sort(["target", "_split", "_type", "token_type", "chunk"])
    # other tokens are shown quoted and escaped, so that "\n" or " of" stay readable in CSV and Markdown
    shown = pl.col("token_type").map_elements(lambda t: t if t in rank else repr(t), return_dtype=pl.String)
    return table.with_columns(shown).select("target", "split", "token_type", "layer", "unchanged", "changed")


TABLE7_COLUMNS = ("target", "split", "changed", "unchanged", "hint_differs", "switched", "switch_rate")


def table7(datasets: dict[str, pl.DataFrame]) -> pl.DataFrame:
    """Counts per target and split of the balanced hint data (the paper's Table 7), and the switch rate.

    changed / unchanged: rows whose hinted answer differs from / equals the unhinted one (the paper's columns).
    hint_differs: rows whose hint letter is not the unhinted answer, the switch rate's denominator; switched:
    those of them whose hinted answer is the hint letter; switch_rate = switched / hint_differs (null when no
    hint differs). A hint equal to the unhinted answer is left out of both: the answer cannot switch to it."""
    differs = pl.col("hint_letter") != pl.col("answer_plain")
    frames = [
        df.group_by("split")
        .agg(changed=pl.col("has_changed").sum().cast(pl.Int64),
             unchanged=(~pl.col("has_changed")).sum().cast(pl.Int64),
             hint_differs=differs.sum().cast(pl.Int64),
             switched=(differs & (pl.col("answer_hinted") == pl.col("hint_letter"))).sum().cast(pl.Int64))
        .with_columns(pl.lit(target).alias("target"))
        for target, df in datasets.items()
    ]
    table = pl.concat(frames).with_columns(
        pl.col("split").replace_strict({"train": 0, "test": 1}, return_dtype=pl.Int64).alias("_split"),
        pl.when(pl.col("hint_differs") > 0)
        .then((pl.col("switched") / pl.col("hint_differs")).round(4))
        .otherwise(None).alias("switch_rate"),
    )
    return table.sort(["target", "_split"]).select(*TABLE7_COLUMNS)
