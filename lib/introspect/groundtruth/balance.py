"""Train/test splits and label balancing for the causal tasks (appendix E.2, E.3).

Without balancing, most patching outcomes are "unchanged" except in a few (token type, layer) cells where
they are almost always "changed": an explainer could score well by learning the cell and ignoring the
vector. So within each cell the majority label is capped at `max_ratio` times the minority label (cells
with a single label are dropped unless `max_ratio` is infinite), and no cell keeps more than
`max_per_cell` rows. Splits are drawn by group (a counterfactual pair, a question) so that no prompt is in
both splits.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np
import polars as pl


@dataclasses.dataclass(frozen=True)
class BalanceSettings:
    test_fraction: float = 0.3  # share of groups (pairs / questions) in the test split
    max_per_cell: int = 200  # most rows a cell keeps in one split
    max_ratio: float = 1.0  # majority label <= max_ratio x minority label within a cell
    seed: int = 0

    def __post_init__(self):
        if not 0 < self.test_fraction < 1:
            raise ValueError(f"test_fraction must be in (0, 1), got {self.test_fraction}")
        if self.max_ratio < 1:
            raise ValueError(f"max_ratio must be >= 1, got {self.max_ratio}")


def split_groups(groups: Sequence, test_fraction: float, seed: int) -> dict:
    """Assign each distinct group to 'train' or 'test' (seeded; at least one group in each split)."""
    distinct = sorted(set(groups))
    if len(distinct) < 2:
        raise ValueError(f"need at least 2 groups to split, got {len(distinct)}")
    order = np.random.default_rng(seed).permutation(len(distinct))
    n_test = min(max(1, round(test_fraction * len(distinct))), len(distinct) - 1)
    test = {distinct[i] for i in order[:n_test]}
    return {g: ("test" if g in test else "train") for g in distinct}


def balance_cells(df: pl.DataFrame, cells: Sequence[str], label: str, max_per_cell: int, max_ratio: float,
                  seed: int) -> pl.DataFrame:
    """Keep a seeded sample of each cell with the label ratio and the cell size capped (row order kept)."""
    rng = np.random.default_rng(seed)
    indexed = df.with_row_index("_row")
    keep: list[int] = []
    for _, cell in sorted(indexed.group_by(list(cells), maintain_order=True), key=lambda kv: str(kv[0])):
        by_label = {value: part["_row"].to_numpy() for (value,), part in cell.group_by([label])}
        counts = {value: len(rows) for value, rows in by_label.items()}
        minority = min(counts.values()) if len(counts) > 1 else 0
        cap = math.inf if math.isinf(max_ratio) else math.floor(max_ratio * minority)
        quota = {value: min(n, cap) for value, n in counts.items()}
        total = sum(quota.values())
        if total > max_per_cell:  # shrink every label in proportion, keeping the ratio
            quota = {value: math.floor(q * max_per_cell / total) for value, q in quota.items()}
        for value in sorted(by_label, key=str):
            rows = by_label[value]
            keep += rng.choice(rows, size=int(quota[value]), replace=False).tolist()
    return indexed.filter(pl.col("_row").is_in(sorted(keep))).drop("_row")


def split_and_balance(df: pl.DataFrame, group: str, cells: Sequence[str], label: str,
                      settings: BalanceSettings) -> pl.DataFrame:
    """Add a `split` column (by `group`) and balance each split's cells separately."""
    assignment = split_groups(df[group].to_list(), settings.test_fraction, settings.seed)
    with_split = df.with_columns(pl.col(group).replace_strict(assignment, return_dtype=pl.String).alias("split"))
    parts = [
        balance_cells(with_split.filter(pl.col("split") == split), cells, label, settings.max_per_cell,
                      settings.max_ratio, settings.seed + i)
        for i, split in enumerate(("train", "test"))
    ]
    return pl.concat(parts)
