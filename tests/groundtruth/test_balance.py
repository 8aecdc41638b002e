"""Train/test splits and label balancing of the causal tasks (appendix E.2, E.3)."""

from __future__ import annotations

import polars as pl
from conftest import synthetic_sweep

from introspect.groundtruth.balance import BalanceSettings, split_and_balance
from introspect.reporting.paper_tables import table6, table7
from introspect.schemas import check_schema


def test_balancing_invariants():
    sweep = check_schema(synthetic_sweep(), "patching_sweep")
    settings = BalanceSettings(test_fraction=0.25, max_per_cell=30, max_ratio=1.5, seed=0)
    data = split_and_balance(sweep, "pair_id", ["token_type", "chunk"], "has_changed", settings)
    check_schema(data, "patching_dataset")
    # no pair is in both splits; the test split holds about a quarter of the pairs
    by_pair = data.group_by("pair_id").agg(pl.col("split").n_unique())
    assert by_pair["split"].max() == 1
    assert data.filter(pl.col("split") == "test")["pair_id"].n_unique() == 10
    cells = data.group_by(["split", "token_type", "chunk"]).agg(
        changed=pl.col("has_changed").sum(), unchanged=(~pl.col("has_changed")).sum())
    for row in cells.iter_rows(named=True):
        big, small = max(row["changed"], row["unchanged"]), min(row["changed"], row["unchanged"])
        assert small > 0 and big <= 1.5 * small  # single-label cells are dropped
        assert row["changed"] + row["unchanged"] <= 30
    # deterministic for a seed
    again = split_and_balance(sweep, "pair_id", ["token_type", "chunk"], "has_changed", settings)
    assert again.equals(data)
    counts = table6({"m": data})
    assert counts["unchanged"].sum() + counts["changed"].sum() == data.height
    assert counts["token_type"].to_list()[:1] == ["subject final"]
    assert "' or'" in counts["token_type"].to_list()


def test_balancing_the_runs_evens_each_split_and_keeps_questions_apart():
    n = 400
    runs = pl.DataFrame({"question_id": [f"q/{i}" for i in range(n)], "has_changed": [i % 5 == 0 for i in range(n)]})
    data = split_and_balance(runs, "question_id", ["split"], "has_changed",
                             BalanceSettings(test_fraction=0.3, max_per_cell=n, max_ratio=1.0, seed=0))
    for split in ("train", "test"):
        part = data.filter(pl.col("split") == split)
        assert part["has_changed"].sum() == (~part["has_changed"]).sum() > 0
    train = set(data.filter(pl.col("split") == "train")["question_id"])
    assert not train & set(data.filter(pl.col("split") == "test")["question_id"])
    t7 = table7({"m": data})
    assert t7["split"].to_list() == ["train", "test"] and (t7["changed"] == t7["unchanged"]).all()
