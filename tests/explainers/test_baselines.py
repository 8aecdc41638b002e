"""The nearest-neighbour baselines of Tables 1 and 4."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from introspect.explainers.baselines import nearest_neighbour


def frame(vectors, layers, labels=None):
    data = {"layer": layers, "vector": np.asarray(vectors, dtype=np.float32)}
    schema = {"layer": pl.Int64, "vector": pl.Array(pl.Float32, len(vectors[0]))}
    if labels is not None:
        data["label"], schema["label"] = labels, pl.String
    return pl.DataFrame(data, schema=schema)


def test_nearest_neighbour_all_and_per_layer():
    train = frame([[1, 0, 0], [0, 1, 0], [0, 0, 1], [0.9, 0.1, 0]], [3, 3, 5, 5], ["a", "b", "c", "d"])
    items = frame([[1, 0, 0], [0, 0.2, 1]], [5, 3])
    assert nearest_neighbour(train, items, per_layer=False) == ["a", "c"]
    assert nearest_neighbour(train, items, per_layer=True) == ["d", "b"]  # only features of the item's layer
    with pytest.raises(ValueError, match=r"layer\(s\) \[7\]"):
        nearest_neighbour(train, frame([[1, 0, 0]], [7]), per_layer=True)


def test_per_layer_sample_caps_each_layer():
    from introspect.explainers.baselines import per_layer_sample

    train = frame([[float(i), 0.0] for i in range(7)], [1, 1, 1, 1, 2, 2, 2], list("abcdefg"))
    sample = per_layer_sample(train, 2, seed=0)
    assert sample.group_by("layer").len().sort("layer").rows() == [(1, 2), (2, 2)]
    assert per_layer_sample(train, 2, seed=0).equals(sample) and per_layer_sample(train, None, 0).equals(train)
