"""Train/test splits and label balancing for the causal tasks (appendix E.2, E.3).

Appendix E.2: without balancing, most patching outcomes are "unchanged" except in a few (token type, layer)
cells where they are almost always "changed", so an explainer could score well by learning the cell and
ignoring the vector. The paper balances in two ways, and so does :func:`balance_cells`, within each split:

1. no cell is over-represented: a cell keeps at most ``max_per_cell`` rows, trimmed as evenly between the
   labels as the cell allows (the rarer label is kept whole when it fits in half the cap). A cell with a
   single label is kept (the paper's Table 6 has "Changed Answer Option" cells with 0 False / 600 True);
2. has-changed is roughly equal overall: the majority label is capped at ``max_ratio`` times the minority
   label over the whole split, removing majority rows from the cells that hold the most of them (every
   cell keeps at least as many majority rows as the fullest cell after the cut, or all it has).

Splits are drawn by group (for patching: the original fact, so that every pair built on one statement x is
in the same split; for hints: the question), so that no prompt is in both splits. The hint task balances
one cell per split, where step 1 keeps everything and step 2 is its appendix E.3 balance.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import math
from typing import Hashable, Mapping, Sequence

import numpy as np
import polars as pl

log = logging.getLogger(__name__)

#: what the patching dataset is split by (the original fact x: its relation and subject) and balanced within
PATCHING_GROUP = ("relation_id", "subject")
PATCHING_CELLS = ("token_type", "chunk")


@dataclasses.dataclass(frozen=True)
class BalanceSettings:
    test_fraction: float = 0.3  # share of groups (original facts / questions) in the test split
    max_per_cell: int = 200  # most rows one cell keeps in one split (both labels together)
    max_ratio: float = 1.0  # majority label <= max_ratio x minority label over a whole split (inf: no cap)
    seed: int = 0

    def __post_init__(self):
        if not 0 < self.test_fraction < 1:
            raise ValueError(f"test_fraction must be in (0, 1), got {self.test_fraction}")
        if self.max_ratio < 1:
            raise ValueError(f"max_ratio must be >= 1, got {self.max_ratio}")
        if self.max_per_cell < 1:
            raise ValueError(f"max_per_cell must be >= 1, got {self.max_per_cell}")


def split_groups(groups: Sequence[Hashable], test_fraction: float, seed: int) -> dict:
    """Assign each distinct group to 'train' or 'test' (seeded; at least one group in each split)."""
    distinct = sorted(set(groups))
    if len(distinct) < 2:
        raise ValueError(f"need at least 2 groups to split, got {len(distinct)}")
    order = np.random.default_rng(seed).permutation(len(distinct))
    n_test = min(max(1, round(test_fraction * len(distinct))), len(distinct) - 1)
    test = {distinct[i] for i in order[:n_test]}
    return {g: ("test" if g in test else "train") for g in distinct}


def level(counts: Mapping[Hashable, int], total: int) -> dict:
    """Quotas <= counts summing to min(total, sum(counts)) that are as even as the counts allow.

    Water-filling: every key keeps min(count, c) for the largest level c that fits, and the rows left over
    go one each to the keys above the level, in sorted order (by ``str``). ``level({'a': 5, 'b': 40}, 20)``
    is ``{'a': 5, 'b': 15}``.
    """
    if total < 0:
        raise ValueError(f"cannot keep {total} rows")
    if sum(counts.values()) <= total:
        return dict(counts)
    ordered = sorted(counts.values())
    used, remaining = 0, len(ordered)  # rows of the keys kept whole; keys above the level
    for n in ordered:  # raise the level to the next count while that still fits
        if used + n * remaining > total:
            break
        used, remaining = used + n, remaining - 1
    c = (total - used) // remaining  # remaining > 0: the counts do not all fit
    left = total - used - c * remaining
    quota = {}
    for key in sorted(counts, key=str):
        quota[key] = min(counts[key], c)
        if counts[key] > c and left > 0:
            quota[key] += 1
            left -= 1
    return quota


def balance_cells(df: pl.DataFrame, cells: Sequence[str], label: str, max_per_cell: int, max_ratio: float,
                  seed: int) -> pl.DataFrame:
    """A seeded sample of `df` (one split): every cell capped, then the labels balanced overall (row order kept).

    See the module docstring. A split where one label never occurs cannot be balanced: with a finite
    `max_ratio` it loses every row (and a warning says so); with ``max_ratio = inf`` only the cell caps apply.
    """
    rng = np.random.default_rng(seed)
    indexed = df.with_row_index("_row")
    by_cell = []  # per cell (sorted by str of its key): {label value: row indices}
    for _, cell in sorted(indexed.group_by(list(cells), maintain_order=True), key=lambda kv: str(kv[0])):
        by_cell.append({value: part["_row"].to_numpy() for (value,), part in cell.group_by([label])})
    quotas = [level({value: len(rows) for value, rows in by_label.items()}, max_per_cell) for by_label in by_cell]
    if not math.isinf(max_ratio) and quotas:
        totals = collections.Counter()
        for quota in quotas:
            totals.update(quota)
        minority = min(totals.values()) if len(totals) > 1 else 0
        if minority == 0:
            present = sorted((str(v) for v, n in totals.items() if n), key=str)
            log.warning("only %s=%s occurs in this split of %d rows: it cannot be balanced and loses every row "
                        "(set max_ratio to .inf to keep single-label splits)", label, "/".join(present), df.height)
        cap = math.floor(max_ratio * minority)
        for value, total in totals.items():
            if total > cap:  # trim this label in the cells that hold most of it
                per_cell = level({i: q.get(value, 0) for i, q in enumerate(quotas)}, cap)
                for i, quota in enumerate(quotas):
                    if value in quota:
                        quota[value] = per_cell[i]
    keep: list[int] = []
    for by_label, quota in zip(by_cell, quotas):
        for value in sorted(by_label, key=str):
            keep += rng.choice(by_label[value], size=int(quota[value]), replace=False).tolist()
    return indexed.filter(pl.col("_row").is_in(sorted(keep))).drop("_row")


def split_and_balance(df: pl.DataFrame, group: str | Sequence[str], cells: Sequence[str], label: str,
                      settings: BalanceSettings) -> pl.DataFrame:
    """Add a `split` column (by `group`: a column, or columns that together name a group) and balance each
    split separately (:func:`balance_cells`)."""
    if isinstance(group, str):
        assignment = split_groups(df[group].to_list(), settings.test_fraction, settings.seed)
        split = pl.col(group).replace_strict(assignment, return_dtype=pl.String)
        with_split = df.with_columns(split.alias("split"))
    else:
        keys = df.select(list(group)).rows()
        assignment = split_groups(keys, settings.test_fraction, settings.seed)
        with_split = df.with_columns(pl.Series("split", [assignment[k] for k in keys], dtype=pl.String))
    parts = [
        balance_cells(with_split.filter(pl.col("split") == split), cells, label, settings.max_per_cell,
                      settings.max_ratio, settings.seed + i)
        for i, split in enumerate(("train", "test"))
    ]
    return pl.concat(parts)


def balance_patching(sweep: pl.DataFrame, settings: BalanceSettings) -> pl.DataFrame:
    """The activation-patching dataset (appendix E.2): the sweep split by original fact (relation and subject
    of x), then balanced within each split over its (token type, layer chunk) cells."""
    return split_and_balance(sweep, PATCHING_GROUP, PATCHING_CELLS, "has_changed", settings)
