"""Nearest-neighbour baselines of Tables 1 and 4 (paper section 3.2).

NN-all / NN-layer: the label of the training feature with the largest dot product with v (over all layers,
or over v's layer only).
"""

from __future__ import annotations

import math

import polars as pl
import torch


def nearest_neighbour(train: pl.DataFrame, items: pl.DataFrame, per_layer: bool) -> list[str]:
    """The label of the training feature with the largest <v_train, v> (NN-all; NN-layer: same layer only)."""
    if train.height == 0:
        raise ValueError("the nearest-neighbour baseline needs training features; the training pool is empty")
    bank = torch.from_numpy(train["vector"].to_numpy().copy()).float()
    labels = train["label"].to_list()
    layers = torch.tensor(train["layer"].to_list())
    queries = torch.from_numpy(items["vector"].to_numpy().copy()).float()
    scores = queries @ bank.T
    if per_layer:
        same = torch.tensor(items["layer"].to_list())[:, None] == layers[None, :]
        if not bool(same.any(1).all()):
            missing = sorted(set(items["layer"].to_list()) - set(train["layer"].to_list()))
            raise ValueError(f"NN-layer: no training feature at layer(s) {missing}")
        scores = scores.masked_fill(~same, -math.inf)
    return [labels[i] for i in scores.argmax(1).tolist()]


def per_layer_sample(train: pl.DataFrame, n_per_layer: int | None, seed: int) -> pl.DataFrame:
    """At most `n_per_layer` training features of each layer (seeded): the x-axis of Figures 5 and 7."""
    if n_per_layer is None:
        return train
    parts = []
    for offset, layer in enumerate(sorted(set(train["layer"].to_list()))):
        rows = train.filter(pl.col("layer") == layer)
        parts.append(rows if rows.height <= n_per_layer else rows.sample(n=n_per_layer, seed=seed + offset))
    return pl.concat(parts)
