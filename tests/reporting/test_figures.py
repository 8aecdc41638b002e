"""Figures 5-7: per-method summaries of scores and the PNG plots."""

from __future__ import annotations

import polars as pl
import pytest

from introspect.reporting.figures import plot_scaling, plot_similarity, similarity_points, summarise


def scores(values_by_metric):
    rows = [(f"i{k}", metric, v) for metric, values in values_by_metric.items() for k, v in enumerate(values)]
    return pl.DataFrame(rows, schema=["item_id", "metric", "value"], orient="row")


def test_summarise_splits_scaling_points_and_scales_to_100():
    summary = summarise({"self@n10": scores({"sae_judge": [0.0, 0.5, 1.0]}),
                         "self@n100": scores({"sae_judge": [1.0, 1.0, 1.0]}),
                         "selfie": scores({"sae_judge": [0.25, 0.25, 0.25, 0.25]})})
    assert summary.select("method", "n_train").rows() == [("self", 10), ("self", 100), ("selfie", None)]
    assert summary["mean"].to_list() == [50.0, 100.0, 25.0]
    assert summary["se"][0] == pytest.approx(50 / 3 ** 0.5) and summary["se"][1] == 0.0


def test_plots_are_png_files(tmp_path):
    summary = summarise({f"{m}@n{n}": scores({"sae_judge": [n / 1000, 0.1], "act_simulator": [0.2, 0.3]})
                         for m in ("self", "nn_layer") for n in (10, 100)}
                        | {"selfie": scores({"sae_judge": [0.1, 0.2], "act_simulator": [0.1, 0.1]})})
    plot_scaling(summary, ["sae_judge", "act_simulator"], tmp_path / "f.png", "title")
    assert (tmp_path / "f.png").read_bytes()[:4] == b"\x89PNG"
    # two runs of one explainer model: each has its own similarity (through its own Pi_l), so its own x
    sims = pl.DataFrame({"run": ["run-a", "run-b"], "explainer": ["a", "a"], "projection": ["pre", "random"],
                         "sae_pattern_similarity": [100.0, 60.0], "dot_product_similarity": [100.0, 80.0]})
    plain = summarise({"run-a": scores({"sae_judge": [0.5, 0.7]}), "run-b": scores({"sae_judge": [0.1, 0.2]})})
    points = similarity_points(plain, sims)
    assert points.select("run", "sae_pattern_similarity", "mean").rows() == [("run-a", 100.0, 60.0),
                                                                            ("run-b", 60.0, pytest.approx(15.0))]
    plot_similarity(points, tmp_path / "g.png", "title")
    assert (tmp_path / "g.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match=r"no activation similarity for the run\(s\) \['run-b'\]"):
        similarity_points(plain, sims.head(1))
