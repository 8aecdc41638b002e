"""Scores of feature descriptions: simulator and judge per item, best of several candidates, answer diversity."""

from __future__ import annotations

import math
from typing import Sequence

import polars as pl


def simulator_scores(items: pl.DataFrame, candidates: Sequence[Sequence[str]], windows: pl.DataFrame, simulator,
                     n_top: int) -> list[float]:
    """Simulator score of each item's description on the item's *check* half of exemplars (the best of its
    candidates when it has several, as SelfIE's scales).

    The check half (odd ranks of the top and of the random windows; :func:`introspect.groundtruth.exemplars.halves`) is
    used for every method and eval set, because the gold SAE labels were chosen on the even half: scoring
    them there would flatter them. The absolute value of the correlation is kept, as the authors' evaluation
    code does; an undefined correlation (a constant prediction) scores 0.
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
    return [max(0.0 if math.isnan(float(v)) else abs(float(v)) for v in scores)
            for scores in simulator.score_calls(calls)]


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


def judge_best(judge, candidates: Sequence[Sequence[str]], expected: Sequence[str]) -> list[float | None]:
    """Per item, the judge's best score over its candidates (one judge call for all texts); None when every
    reply for the item was invalid. With one candidate per item this is the judge's score; for SelfIE it is
    the paper's best-of-5 upper bound."""
    flat = [t for texts in candidates for t in texts]
    values = judge.scores(flat, [e for texts, e in zip(candidates, expected) for _ in texts])
    out, start = [], 0
    for texts in candidates:
        valid = [v for v in values[start:start + len(texts)] if v is not None]
        out.append(max(valid) if valid else None)
        start += len(texts)
    return out
