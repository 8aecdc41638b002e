"""The nearest-neighbour baselines of Tables 1 and 4."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from introspect.explainers.baselines import nearest_neighbour
from introspect.tensorfiles import RowFile, RowFileWriter


def frame(vectors, layers, labels=None):
    data = {"layer": layers, "vector": np.asarray(vectors, dtype=np.float32)}
    schema = {"layer": pl.Int64, "vector": pl.Array(pl.Float32, len(vectors[0]))}
    if labels is not None:
        data["label"], schema["label"] = labels, pl.String
    return pl.DataFrame(data, schema=schema)


def bank(tmp_path, vectors, layers, labels):
    """A training table and its row file, as features_split writes them."""
    vectors = np.asarray(vectors, dtype=np.float32)
    with RowFileWriter(tmp_path / "train_vectors.safetensors", len(vectors), vectors.shape[1]) as out:
        out.write(vectors)
    train = pl.DataFrame({"layer": layers, "row": list(range(len(vectors))), "label": labels},
                         schema={"layer": pl.Int64, "row": pl.Int64, "label": pl.String})
    return train, RowFile(tmp_path / "train_vectors.safetensors")


def test_nearest_neighbour_all_and_per_layer(tmp_path):
    train, vectors = bank(tmp_path, [[1, 0, 0], [0, 1, 0], [0, 0, 1], [0.9, 0.1, 0]], [3, 3, 5, 5], list("abcd"))
    items = frame([[1, 0, 0], [0, 0.2, 1]], [5, 3])
    assert nearest_neighbour(train, vectors, items, per_layer=False) == ["a", "c"]
    assert nearest_neighbour(train, vectors, items, per_layer=True) == ["d", "b"]  # only the item's layer
    assert nearest_neighbour(train[2:], vectors, items, per_layer=False) == ["d", "c"]  # a subset of the bank
    with pytest.raises(ValueError, match=r"layer\(s\) \[7\]"):
        nearest_neighbour(train, vectors, frame([[1, 0, 0]], [7]), per_layer=True)


def test_chunked_search_equals_a_dense_argmax_with_ties_to_the_first_row(tmp_path):
    rng = np.random.default_rng(0)
    n, d = 3000, 16
    vectors = rng.standard_normal((n, d)).astype(np.float16).astype(np.float32)
    vectors[2500] = vectors[40]  # a tie: the earlier row wins, as in a dense argmax
    layers = rng.integers(0, 3, n).tolist()
    train, file = bank(tmp_path, vectors, layers, [f"f{i}" for i in range(n)])
    queries = np.concatenate([vectors[[40]], rng.standard_normal((50, d)).astype(np.float32)])
    items = frame(queries, rng.integers(0, 3, len(queries)).tolist())
    for per_layer in (False, True):
        scores = queries @ vectors.T
        if per_layer:
            scores[np.asarray(items["layer"])[:, None] != np.asarray(layers)[None, :]] = -np.inf
        dense = [f"f{i}" for i in scores.argmax(1)]
        chunked = nearest_neighbour(train, file, items, per_layer=per_layer, budget_mb=1)  # 2,737-row chunks
        assert chunked == dense
        assert per_layer or chunked[0] == "f40"


def test_per_layer_sample_caps_each_layer():
    from introspect.explainers.baselines import per_layer_sample

    train = frame([[float(i), 0.0] for i in range(7)], [1, 1, 1, 1, 2, 2, 2], list("abcdefg"))
    sample = per_layer_sample(train, 2, seed=0)
    assert sample.group_by("layer").len().sort("layer").rows() == [(1, 2), (2, 2)]
    assert per_layer_sample(train, 2, seed=0).equals(sample) and per_layer_sample(train, None, 0).equals(train)
