"""Nearest-neighbour baselines of Tables 1 and 4 (paper section 3.2).

NN-all / NN-layer: the label of the training feature with the largest dot product with v (over all layers,
or over v's layer only). The features searched (the *bank*, :func:`nn_bank`) are the ones the table's
explainers train on, so that explainers and baselines see the same data: the seeded ``max_train`` sample of
the training pool that :func:`introspect.explainers.training.fit_explainer` draws (the same function and
seed), or at a scaling point the per-layer sample of :func:`per_layer_sample` that the scaling runs train on.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import torch

from introspect.tensorfiles import RowFile, chunk_rows


def nearest_neighbour(train: pl.DataFrame, vectors: RowFile, items: pl.DataFrame, per_layer: bool,
                      budget_mb: int = 1024) -> list[str]:
    """The label of the training feature with the largest <v_train, v> (NN-all; NN-layer: same layer only).

    `train` is a feature_train table (any subset of rows); its ``row`` column indexes `vectors`, the train vectors
    file. The search reads the bank a chunk at a time (sized to `budget_mb`) and keeps a running best per item,
    so memory is the items and one chunk, not the bank: at the paper's 4M features a dense (items x N) score
    matrix would be tens of GB. Ties go to the earlier training row, as a dense argmax would. NN-layer searches
    each layer's items among that layer's features only.
    """
    if train.height == 0:
        raise ValueError("the nearest-neighbour baseline needs training features; the training pool is empty")
    if not per_layer:
        return _search(train, vectors, items, budget_mb)
    missing = sorted(set(items["layer"].to_list()) - set(train["layer"].to_list()))
    if missing:
        raise ValueError(f"NN-layer: no training feature at layer(s) {missing}")
    found: list[str | None] = [None] * items.height
    indexed = items.with_row_index("_item")
    for (layer,), part in indexed.group_by("layer", maintain_order=True):
        labels = _search(train.filter(pl.col("layer") == layer), vectors, part, budget_mb)
        for i, label in zip(part["_item"].to_list(), labels):
            found[i] = label
    return found


def _search(train: pl.DataFrame, vectors: RowFile, items: pl.DataFrame, budget_mb: int) -> list[str]:
    """Running top-1 of every item over the bank rows of `train`, a chunk at a time."""
    labels = train["label"].to_list()
    rows = train["row"].to_numpy()
    queries = torch.from_numpy(items["vector"].to_numpy().copy()).float()
    best = torch.full((items.height,), -math.inf)
    best_row = torch.full((items.height,), -1, dtype=torch.long)
    step = chunk_rows(queries.shape[1], budget_mb, per_row_extra=4 * items.height)
    for start in range(0, len(rows), step):
        block = torch.from_numpy(vectors.take(rows[start:start + step]).astype(np.float32))
        value, index = (queries @ block.T).max(1)
        better = value > best
        best = torch.where(better, value, best)
        best_row = torch.where(better, index + start, best_row)
    return [labels[i] for i in best_row.tolist()]


def per_layer_sample(train: pl.DataFrame, n_per_layer: int | None, seed: int) -> pl.DataFrame:
    """At most `n_per_layer` training features of each layer (seeded): the x-axis of Figures 5 and 7."""
    if n_per_layer is None:
        return train
    parts = []
    for offset, layer in enumerate(sorted(set(train["layer"].to_list()))):
        rows = train.filter(pl.col("layer") == layer)
        parts.append(rows if rows.height <= n_per_layer else rows.sample(n=n_per_layer, seed=seed + offset))
    return pl.concat(parts)


def nn_bank(train: pl.DataFrame, max_train: int | None, n_per_layer: int | None, seed: int) -> pl.DataFrame:
    """The training features a nearest-neighbour baseline searches: the rows an explainer trains on.

    At a scaling point (`n_per_layer` set) the per-layer sample of the scaling runs (which train on it whole,
    without max_train); otherwise the seeded sample of at most `max_train` rows that
    :func:`introspect.explainers.training.fit_explainer` draws from the same pool with the same seed (the
    training section's max_train and the top-level seed: the rows of every run that does not override them)."""
    from introspect.explainers.training import subsample

    if n_per_layer is not None:
        return per_layer_sample(train, n_per_layer, seed)
    return subsample(train, max_train, seed)
