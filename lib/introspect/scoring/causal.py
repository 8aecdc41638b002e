"""Metrics of the causal tasks (activation patching, input ablation; paper section 5.1, 5.2).

Answers are parsed by :func:`introspect.explainers.statements.parse_causal`.

Metrics (the authors' definitions, section 5.1, with one change: an unparseable output is scored wrong on
every metric and counted, never dropped and never a crash):

- exact match: both parts right, i.e. the parsed has-changed value and the parsed content equal the
  gold ones (the paper, section 5.1: "Requires the explainer to correctly predict both parts"). The
  statement's wording is not compared, so an untrained explainer that writes "The output would change to
  <<<X>>>." (as F.2/F.3 tell it to) is credited like the trained template;
- content match: the parsed contents are equal (after ``strip()``; case-sensitive);
- has-changed F1: macro F1 over the two classes changed and unchanged, always both (``has_changed_f1``).
"""

from __future__ import annotations

import logging
import math
from typing import Any, Sequence

import numpy as np

from introspect.explainers.statements import parse_causal
from introspect.reporting.statistics import bootstrap_se, mean_se

log = logging.getLogger(__name__)


def exact_match(pred: str, gold: str) -> bool:
    """Whether both parts are right: the parsed has-changed value and content (unparseable: False)."""
    p, g = parse_causal(pred), parse_causal(gold)
    return p.valid and g.valid and p.has_changed == g.has_changed and p.content == g.content


def content_match(pred: str, gold: str) -> bool:
    """Whether the predicted <<<content>>> equals the gold one (False if either does not parse)."""
    p, g = parse_causal(pred), parse_causal(gold)
    return p.valid and g.valid and p.content == g.content


def _changed_codes(pred: Sequence[bool | None] | np.ndarray) -> np.ndarray:
    """Predicted has-changed values as int8 codes: 1 changed, 0 unchanged, -1 unparseable (None)."""
    arr = np.asarray(pred, dtype=object) if not isinstance(pred, np.ndarray) else pred
    if arr.dtype.kind in "biu":
        codes = arr.astype(np.int8)
        if not np.isin(codes, (-1, 0, 1)).all():
            raise ValueError("integer has-changed codes must be -1 (unparseable), 0 or 1")
        return codes
    return np.array([-1 if p is None else int(bool(p)) for p in arr], dtype=np.int8)


def _gold_bools(gold: Sequence[bool] | np.ndarray) -> np.ndarray:
    arr = np.asarray(gold)
    if arr.dtype == object and any(g is None for g in arr):
        raise ValueError("gold has-changed values must all be True or False, not None")
    return arr.astype(bool)


def _macro_f1(codes: np.ndarray, gold: np.ndarray) -> float:
    """Macro F1 over changed/unchanged from int8 prediction codes and bool golds (see has_changed_f1)."""
    if codes.shape != gold.shape:
        raise ValueError(f"{codes.shape[0]} predictions but {gold.shape[0]} gold labels")
    if codes.size == 0:
        raise ValueError("has-changed F1 of zero items is undefined")
    scores = []
    for cls in (1, 0):  # always both classes, present in gold or not
        g = gold == bool(cls)
        p = codes == cls
        tp = int(np.sum(p & g))
        fp = int(np.sum(p & ~g))
        fn = int(np.sum(g & ~p))  # includes unparseable predictions of gold class `cls`
        denominator = 2 * tp + fp + fn
        scores.append(2 * tp / denominator if denominator else 0.0)  # absent and never predicted: 0
    return float(np.mean(scores))


def has_changed_f1(pred: Sequence[bool | None], gold: Sequence[bool]) -> float:
    """Macro F1 over changed/unchanged, in [0, 1]; an unparseable prediction (None) counts as wrong.

    The mean of the two classes' F1 = 2 TP / (2 TP + FP + FN), always over both classes, as the paper
    defines the metric (section 5.1), whichever classes the gold labels contain. A None prediction is a
    false negative for its gold class and a false positive for neither class. A class absent from gold
    scores 0: F1 = 0 when it is predicted (FP > 0) and, by our convention, also when it is never predicted
    (0/0 taken as 0, scikit-learn's ``f1_score(labels=[True, False], average="macro", zero_division=0)``).
    So a test set with a single gold class scores at most 50, even for perfect predictions: the metric
    says how well an explainer separates the two outcomes, and such a set cannot show that.
    """
    return _macro_f1(_changed_codes(pred), _gold_bools(gold))


def score_causal(
    predictions: Sequence[str], golds: Sequence[str], n_boot: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """Score explainer outputs against gold explanations: per-item 0/1 arrays and the table's aggregates.

    Per item (numpy arrays of length n): ``exact``, ``content``, ``changed_correct`` (int8 0/1; an
    unparseable prediction is 0 on all three), ``valid`` (bool), ``pred_changed`` (int8: 1 changed,
    0 unchanged, -1 unparseable) and ``gold_changed`` (bool).

    Aggregates (percentages, i.e. * 100): ``exact_match``, ``content_match``, ``has_changed_f1`` and
    their standard errors ``*_se`` (mean_se for the two means, bootstrap_se for F1);
    ``pred_changed_share`` (share of all n predictions that say "changed"; unparseable ones do not);
    ``content_match_changed`` / ``content_match_unchanged`` (content match over items whose gold
    changed / did not; nan when there are none); counts ``n`` and ``n_invalid``.
    Golds must parse (they are the project's own targets): one that does not raises ValueError.
    """
    if len(predictions) != len(golds):
        raise ValueError(f"{len(predictions)} predictions but {len(golds)} golds")
    if len(golds) == 0:
        raise ValueError("nothing to score: no predictions")
    gold_parsed = [parse_causal(g) for g in golds]
    bad = [i for i, g in enumerate(gold_parsed) if not g.valid]
    if bad:
        raise ValueError(f"{len(bad)} gold explanations do not parse (first at index {bad[0]}: {golds[bad[0]]!r})")
    pred_parsed = [parse_causal(p) for p in predictions]

    valid = np.array([p.valid for p in pred_parsed], dtype=bool)
    pred_codes = _changed_codes([p.has_changed for p in pred_parsed])
    gold_changed = np.array([g.has_changed for g in gold_parsed], dtype=bool)
    content = np.array(
        [p.valid and p.content == g.content for p, g in zip(pred_parsed, gold_parsed)], dtype=np.int8
    )
    changed_correct = (pred_codes == gold_changed.astype(np.int8)).astype(np.int8)
    exact = content & changed_correct

    n = len(golds)
    n_invalid = int((~valid).sum())
    if n_invalid:
        log.info("%d of %d explainer outputs do not parse; scored as wrong", n_invalid, n)
    exact_mean, exact_se = mean_se(exact)
    content_mean, content_se = mean_se(content)
    f1 = _macro_f1(pred_codes, gold_changed)
    f1_se = bootstrap_se(_macro_f1, pred_codes, gold_changed, n_boot=n_boot, seed=seed) if n > 1 else math.nan

    def share(mask: np.ndarray) -> float:
        return float(content[mask].mean() * 100) if mask.any() else math.nan

    return {
        "exact": exact,
        "content": content,
        "changed_correct": changed_correct,
        "valid": valid,
        "pred_changed": pred_codes,
        "gold_changed": gold_changed,
        "exact_match": exact_mean * 100,
        "exact_match_se": exact_se * 100,
        "content_match": content_mean * 100,
        "content_match_se": content_se * 100,
        "has_changed_f1": f1 * 100,
        "has_changed_f1_se": f1_se * 100,
        "pred_changed_share": float((pred_codes == 1).mean() * 100),
        "content_match_changed": share(gold_changed),
        "content_match_unchanged": share(~gold_changed),
        "n": n,
        "n_invalid": n_invalid,
    }
