"""Statistics of the result tables: mean and SE, bootstrap SE, and which rows are "not worse than the best".

The paper bolds every entry not significantly different from the best one: a paired t-test when rows share
their items (one target, several explainers), Welch's unpaired t-test when they do not.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from scipy import stats


def _has_none(values: Sequence[Any]) -> bool:
    return any(v is None for v in values)


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
