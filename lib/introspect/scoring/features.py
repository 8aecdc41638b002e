"""Scores of feature descriptions: simulator and judge per item, best of several candidates, invalid replies.

:func:`score_method` is what the ``features_score`` job computes: one method's per-item scores on its eval
sets, as a long frame (item_id, metric, value, n_invalid), n_invalid being how many judge or simulator replies
behind that value were not a valid answer (an item whose every reply was invalid scores 0).
"""

from __future__ import annotations

import logging
import math
from typing import Sequence

import polars as pl

log = logging.getLogger(__name__)

#: The per-item scores frame of one method (what ``results/<target>/features/scores/<method>.parquet`` holds).
SCORES_SCHEMA = {"item_id": pl.String, "metric": pl.String, "value": pl.Float64, "n_invalid": pl.Int64}


def simulator_scores(items: pl.DataFrame, candidates: Sequence[Sequence[str]], windows: pl.DataFrame, simulator,
                     n_top: int) -> tuple[list[float], list[int]]:
    """Simulator score of each item's description on the item's *check* half of exemplars (the best of its
    candidates when it has several, as SelfIE's scales), and each item's number of invalid simulator replies.

    The check half (odd ranks of the top and of the random windows; :func:`introspect.groundtruth.exemplars.halves`) is
    used for every method and eval set, because the gold SAE labels were chosen on the even half: scoring
    them there would flatter them. The absolute value of the correlation is kept, as the authors' evaluation
    code does; an undefined correlation (a constant prediction, or no valid reply) scores 0.
    """
    from introspect.groundtruth.exemplars import halves, to_exemplars

    if hasattr(simulator, "prepare"):  # embed every window the items use in large batches, once
        needed = sorted({int(w) for ids in items["windows"].to_list() for w in ids})
        simulator.prepare([windows["tokens"][w].to_list() for w in needed])
    calls = []
    for texts, window_ids, acts in zip(candidates, items["windows"].to_list(), items["activations"].to_list()):
        ex = to_exemplars(window_ids, acts, windows)
        _, check = halves(n_top, len(ex))
        calls.append(([t or "" for t in texts], [ex[i] for i in check]))
    # every item's calls at once: a remote simulator keeps `concurrency` requests in flight across items
    scores, invalid = simulator.score_calls_counted(calls)
    return [max(0.0 if math.isnan(float(v)) else abs(float(v)) for v in values) for values in scores], list(invalid)


def candidate_texts(items: pl.DataFrame, predictions: pl.DataFrame, source: str = "predictions") -> list[list[str]]:
    """Each item's candidate descriptions, in item order: one per item for a trained explainer or a baseline,
    several for SelfIE (one per scale, marked by a ``candidate`` column)."""
    grouped: dict[str, list[str]] = {}
    for item_id, text in zip(predictions["item_id"].to_list(), predictions["prediction"].to_list()):
        grouped.setdefault(item_id, []).append(text)
    wanted = items["item_id"].to_list()
    if set(grouped) != set(wanted) or ("candidate" not in predictions.columns and predictions.height != len(wanted)):
        raise ValueError(f"{source} does not describe exactly the eval set's {len(wanted)} items; re-run its rule")
    return [grouped[i] for i in wanted]


def judge_best(judge, candidates: Sequence[Sequence[str]], expected: Sequence[str]
               ) -> tuple[list[float | None], list[int]]:
    """Per item, the judge's best score over its candidates (one judge call for all texts; None when every
    reply for the item was invalid), and the item's number of invalid judge replies. With one candidate per
    item this is the judge's score; for SelfIE it is the paper's best-of-5 upper bound."""
    flat = [t for texts in candidates for t in texts]
    values = judge.scores(flat, [e for texts, e in zip(candidates, expected) for _ in texts])
    best, invalid, start = [], [], 0
    for texts in candidates:
        part = values[start:start + len(texts)]
        valid = [v for v in part if v is not None]
        best.append(max(valid) if valid else None)
        invalid.append(len(part) - len(valid))
        start += len(texts)
    return best, invalid


def score_method(evalsets: Sequence[tuple[str, pl.DataFrame, pl.DataFrame, str]], windows: pl.DataFrame, simulator,
                 judge, n_top: int) -> pl.DataFrame:
    """One method's per-item scores (:data:`SCORES_SCHEMA`) on its eval sets.

    `evalsets`: (name, eval items, the method's predictions, where they were read) per eval set. Every set gets
    ``<name>_simulator``; the held-out SAE set (``sae``), whose items have gold labels, also ``sae_judge`` (when
    `judge` is not None). An item whose judge replies were all invalid scores 0 there, and
    its n_invalid says so; invalid replies are not cached, so re-running the job asks for them again."""
    rows: dict[str, list] = {name: [] for name in SCORES_SCHEMA}

    def add(ids, metric, values, invalid):
        rows["item_id"] += ids
        rows["metric"] += [metric] * len(ids)
        rows["value"] += values
        rows["n_invalid"] += invalid

    for name, items, predictions, source in evalsets:
        texts = candidate_texts(items, predictions, source)
        ids = items["item_id"].to_list()
        values, invalid = simulator_scores(items, texts, windows, simulator, n_top)
        add(ids, f"{name}_simulator", values, invalid)
        if sum(invalid):
            log.warning("%s: %d invalid simulator replies on %d of %d items (not cached: a re-run asks again)",
                        name, sum(invalid), sum(n > 0 for n in invalid), len(ids))
        if name == "sae" and judge is not None:
            judged, invalid = judge_best(judge, texts, items["label"].to_list())  # all texts in one batch
            lost = sum(v is None for v in judged)
            if sum(invalid):
                log.warning("sae: %d invalid judge replies; %d items had only invalid ones and score 0 (not cached: "
                            "a re-run asks again)", sum(invalid), lost)
            add(ids, "sae_judge", [0.0 if v is None else v for v in judged], invalid)
    return pl.DataFrame(rows, schema=SCORES_SCHEMA)
