"""Metrics for the causal tasks (activation patching, input ablation; paper section 5.1, 5.2) and table statistics.

An explainer's answer to a causal question is one statement (paper appendix D, F.2, F.3)::

    The most likely output would change to <<<X>>>.
    The output would remain unchanged from <<<X>>>.

Parsing rules (``parse_causal``), decided here and tested in ``tests/test_evaluation.py``:

- case-insensitive; runs of whitespace between words are accepted; "most likely" is optional, so the
  untrained prompts' "The output would change to <<<X>>>." parses like the trained template;
- the statement must open the output (surrounding whitespace aside): a preamble ("Sure! The output ...")
  makes the output unparseable, as the prompts ask for the statement "and nothing else";
- text after the first statement is ignored, except a second statement that disagrees with the first
  (both options given: a hedge), which makes the output unparseable; a repeated identical statement
  (greedy decoding that loops) is fine;
- a statement needs both ``<<<`` and ``>>>``; its content is the text between them, ``strip()``-ed and
  otherwise kept exactly (case included); content holding another ``<<<`` is unparseable.

Metrics (the authors' definitions, section 5.1, with one change: an unparseable output is scored wrong on
every metric and counted, never dropped and never a crash):

- exact match: both parts right, i.e. the parsed has-changed value and the parsed content equal the
  gold ones (the paper, section 5.1: "Requires the explainer to correctly predict both parts"). The
  statement's wording is not compared, so an untrained explainer that writes "The output would change to
  <<<X>>>." (as F.2/F.3 tell it to) is credited like the trained template;
- content match: the parsed contents are equal (after ``strip()``; case-sensitive);
- has-changed F1: macro F1 over the classes changed / unchanged (``has_changed_f1``).
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from scipy import stats

log = logging.getLogger(__name__)

CHANGED_TEMPLATE = "The most likely output would change to <<<{content}>>>."
UNCHANGED_TEMPLATE = "The output would remain unchanged from <<<{content}>>>."

_STATEMENT = re.compile(
    r"the\s+(?:most\s+likely\s+)?output\s+would\s+(?P<verb>change\s+to|remain\s+unchanged\s+from)"
    r"\s*<<<(?P<content>.*?)>>>",
    re.IGNORECASE | re.DOTALL,
)


@dataclass(frozen=True)
class CausalExplanation:
    """What an explainer said about an intervention: did the output change, and to/from what."""

    has_changed: bool | None
    content: str | None
    valid: bool


INVALID = CausalExplanation(has_changed=None, content=None, valid=False)


def _statement(match: re.Match[str]) -> CausalExplanation | None:
    content = match.group("content")
    if "<<<" in content:
        return None
    changed = match.group("verb").lower().startswith("change")
    return CausalExplanation(has_changed=changed, content=content.strip(), valid=True)


def parse_causal(text: str | None) -> CausalExplanation:
    """Read the has-changed value and content from an explainer output; unparseable gives ``valid=False``."""
    if not text:
        return INVALID
    stripped = text.strip()
    first = _STATEMENT.match(stripped)
    if first is None:
        return INVALID
    parsed = _statement(first)
    if parsed is None:
        return INVALID
    for later in _STATEMENT.finditer(stripped, first.end()):
        other = _statement(later)
        if other is None or other != parsed:
            return INVALID
    return parsed


def causal_explanation(has_changed: bool, content: str) -> str:
    """The canonical training target for a causal-task example (paper appendix D)."""
    if "<<<" in content or ">>>" in content:
        raise ValueError(f"content {content!r} holds a <<< or >>> delimiter; its explanation would not parse")
    template = CHANGED_TEMPLATE if has_changed else UNCHANGED_TEMPLATE
    return template.format(content=content)


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
    """Macro F1 over changed/unchanged from int8 prediction codes and bool golds."""
    if codes.shape != gold.shape:
        raise ValueError(f"{codes.shape[0]} predictions but {gold.shape[0]} gold labels")
    if codes.size == 0:
        raise ValueError("has-changed F1 of zero items is undefined")
    scores = []
    for cls in (1, 0):
        g = gold == bool(cls)
        p = codes == cls
        tp = int(np.sum(p & g))
        fp = int(np.sum(p & ~g))
        fn = int(np.sum(g & ~p))  # includes unparseable predictions of gold class `cls`
        if not g.any() and not p.any():
            continue  # class absent from gold and never predicted: not part of the average
        scores.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores)) if scores else 0.0


def has_changed_f1(pred: Sequence[bool | None], gold: Sequence[bool]) -> float:
    """Macro F1 over changed/unchanged, in [0, 1]; an unparseable prediction (None) counts as wrong.

    A None prediction is a false negative for its gold class and a false positive for neither class.
    The average runs over the classes that occur in gold or in the (parseable) predictions, like
    scikit-learn's default label set; a class predicted but absent from gold scores F1 = 0 (there
    ``zero_division=0`` and ours agree). If every prediction is None the F1 is 0.
    """
    return _macro_f1(_changed_codes(pred), _gold_bools(gold))


def mean_se(values: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """Mean and its standard error (sample std, ddof=1, over sqrt(n)); se is nan for n = 1; nan propagates."""
    arr = np.asarray(values, dtype=float)
    if arr.size == 0:
        raise ValueError("mean and standard error of zero values are undefined")
    mean = float(arr.mean())
    if arr.size == 1:
        return mean, math.nan
    return mean, float(arr.std(ddof=1) / math.sqrt(arr.size))


def bootstrap_se(
    metric_fn: Callable[..., float], *arrays: Sequence[Any] | np.ndarray, n_boot: int = 1000, seed: int = 0
) -> float:
    """Standard error of a non-decomposable metric (e.g. F1): std (ddof=1) over item resamples.

    Each resample draws n item indices with replacement and applies the same indices to every array,
    so paired arrays (predictions, golds) stay paired.
    """
    if not arrays:
        raise ValueError("bootstrap_se needs at least one array")
    arrs = [a if isinstance(a, np.ndarray) else np.asarray(a, dtype=object if _has_none(a) else None) for a in arrays]
    n = len(arrs[0])
    if any(len(a) != n for a in arrs):
        raise ValueError(f"bootstrap_se arrays differ in length: {[len(a) for a in arrs]}")
    if n == 0:
        raise ValueError("bootstrap_se of zero items is undefined")
    if n_boot < 2:
        raise ValueError(f"n_boot must be at least 2, got {n_boot}")
    rng = np.random.default_rng(seed)
    values = np.empty(n_boot)
    for b in range(n_boot):
        idx = rng.integers(0, n, size=n)
        values[b] = metric_fn(*(a[idx] for a in arrs))
    return float(values.std(ddof=1))


def _has_none(values: Sequence[Any]) -> bool:
    return any(v is None for v in values)


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


def _reference(arrays: Mapping[str, np.ndarray], reference: str | None) -> str:
    """The row every other row is tested against: `reference`, else the highest mean (first on ties)."""
    if reference is None:
        means = {name: a.mean() if a.size else -math.inf for name, a in arrays.items()}
        return max(means, key=means.__getitem__)
    if reference not in arrays:
        raise ValueError(f"reference row {reference!r} is not among {sorted(arrays)}")
    return reference


def paired_best(
    per_item: Mapping[str, Sequence[float] | np.ndarray], alpha: float = 0.05, reference: str | None = None
) -> set[str]:
    """Rows not significantly worse than the best (the paper's bold): paired t-test p >= alpha, higher better.

    The reference is the row with the highest mean (the first such row on ties) unless ``reference``
    names one (e.g. the row with the best aggregate F1 while the test runs on a per-item proxy). Every
    row is tested two-sided against it with ``scipy.stats.ttest_rel``; p >= alpha, or p = nan (identical
    arrays, or fewer than two items), counts as no significant difference. All arrays must be paired on
    the same items: equal lengths and finite values, else ValueError.
    """
    if not per_item:
        return set()
    arrays = {name: np.asarray(v, dtype=float) for name, v in per_item.items()}
    lengths = {name: a.shape[0] for name, a in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"paired test needs every row scored on the same items; lengths differ: {lengths}")
    nonfinite = [name for name, a in arrays.items() if not np.isfinite(a).all()]
    if nonfinite:
        raise ValueError(f"per-item values are not all finite for rows {nonfinite}")
    reference = _reference(arrays, reference)
    best = {reference}
    for name, a in arrays.items():
        if name == reference:
            continue
        diff = arrays[reference] - a
        if a.size < 2 or not diff.any():
            best.add(name)  # identical arrays, or too few items to test: no evidence of a difference
            continue
        if np.all(diff == diff[0]):
            continue  # a constant non-zero difference: t is infinite, p = 0 (scipy warns on it)
        p = stats.ttest_rel(arrays[reference], a).pvalue
        if math.isnan(p) or p >= alpha:
            best.add(name)
    return best


def unpaired_best(
    per_item: Mapping[str, Sequence[float] | np.ndarray], alpha: float = 0.05, reference: str | None = None
) -> set[str]:
    """Like :func:`paired_best` for rows scored on different items: Welch's t-test (``ttest_ind``, unequal
    variances) of every row against the reference; p >= alpha or p = nan counts as no significant difference."""
    arrays = {name: np.asarray(v, dtype=float) for name, v in per_item.items()}
    if not arrays:
        return set()
    reference = _reference(arrays, reference)
    best = {reference}
    for name, a in arrays.items():
        if name == reference:
            continue
        ref = arrays[reference]
        if a.size < 2 or ref.size < 2 or (a.std() == 0 and ref.std() == 0 and a.mean() == ref.mean()):
            best.add(name)
            continue
        with np.errstate(all="ignore"):
            p = stats.ttest_ind(ref, a, equal_var=False).pvalue
        if math.isnan(p) or p >= alpha:
            best.add(name)
    return best
