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


class Captured(Exception):
    """Raised by the stand-in for the example encoder: training stops once its rows are known."""

    def __init__(self, rows):
        super().__init__("captured")
        self.rows = rows


def rows_an_explainer_trains_on(monkeypatch, train, settings, seed):
    """The rows train_feature_explainer (what features_train.py runs) encodes into training examples: the
    model is not built and training stops before its first step."""
    from types import SimpleNamespace

    import introspect.explainers.features as features
    import introspect.explainers.model as model

    monkeypatch.setattr(model, "build_explainer", lambda *a, **k: SimpleNamespace(tokenizer=None))

    def capture(df, *args, **kwargs):
        raise Captured(df)

    monkeypatch.setattr(features, "feature_examples", capture)
    with pytest.raises(Captured) as got:
        features.train_feature_explainer(train, "unused", "unused", target_hidden=2, projection="none", chat=False,
                                         settings=settings, seed=seed)
    return got.value.rows


def test_nn_bank_is_the_sample_the_explainers_train_on(monkeypatch):
    """Issue 18.1: the NN baselines search the explainers' training sample (max_train, the same seeded draw),
    not the whole pool; a scaling point searches its per-layer sample, as its scaling run trains on it whole."""
    from introspect.explainers.baselines import nn_bank, per_layer_sample

    rng = np.random.default_rng(3)
    pool = pl.DataFrame({"layer": rng.integers(0, 3, 60).tolist(), "row": list(range(60)),
                         "label": [f"f{i}" for i in range(60)]})
    train = {"tuning": "full", "lr": 1e-3, "epochs": 1, "batch_size": 4, "max_train": 25}  # the shared section
    seed = 11
    bank = nn_bank(pool, train["max_train"], None, seed)
    assert bank.height == 25 < pool.height
    assert bank.equals(rows_an_explainer_trains_on(monkeypatch, pool, train, seed))
    assert not bank.equals(nn_bank(pool, 25, None, seed + 1))  # the seed matters: the same one is needed
    # a scaling point: features_train.py samples per layer, the run's max_train is dropped (feature_run_train)
    scaled = rows_an_explainer_trains_on(monkeypatch, per_layer_sample(pool, 4, seed),
                                         {k: v for k, v in train.items() if k != "max_train"}, seed)
    assert nn_bank(pool, train["max_train"], 4, seed).equals(scaled) and scaled.height == 12
    assert nn_bank(pool, None, None, seed).equals(pool)  # max_train null: the whole pool, for both
