"""Train/test splits and label balancing of the causal tasks (appendix E.2, E.3)."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
from conftest import synthetic_sweep

from introspect.groundtruth.balance import BalanceSettings, balance_cells, balance_patching, level, split_and_balance
from introspect.reporting.paper_tables import table6, table7
from introspect.schemas import TOKEN_TYPES, check_schema


def e2_sweep(n_facts=20, pairs_per_fact=3, seed=0):
    """A synthetic sweep with every appendix E.2 token type, several pairs per original fact (x), and the
    outcomes of the paper's Table 6: patching the new answer option always changes the answer, the
    subject's final token in early blocks mostly does, everything else rarely."""
    sweep = synthetic_sweep(n_pairs=n_facts * pairs_per_fact, seed=seed)
    g = np.random.default_rng(seed)
    extra = sweep.filter(pl.col("token_type") == "orig answer option")
    extra = pl.concat([
        extra.with_columns(token_type=pl.lit("new answer option"), token=pl.lit(" France"), has_changed=pl.lit(True)),
        extra.with_columns(token_type=pl.lit("other answer option"), token=pl.lit(" Spain"),
                           has_changed=pl.Series(g.random(extra.height) < 0.2)),
    ])
    sweep = pl.concat([sweep, extra])
    return sweep.with_columns(  # pair p is built on original fact p // pairs_per_fact
        subject=pl.format("subject {}", pl.col("pair_id") // pairs_per_fact),
        counterfactual_subject=pl.format("counterfactual {}", pl.col("pair_id")))


def test_patching_balance_follows_appendix_e2():
    sweep = check_schema(e2_sweep(), "patching_sweep")
    settings = BalanceSettings(test_fraction=0.25, max_per_cell=30, max_ratio=1.5, seed=0)
    data = balance_patching(sweep, settings)
    check_schema(data, "patching_dataset")
    # split by original fact: every pair built on one statement x is in one split; a quarter of the facts test
    by_fact = data.group_by(["relation_id", "subject"]).agg(pl.col("split").n_unique())
    assert by_fact["split"].max() == 1
    assert data.filter(pl.col("split") == "test")["subject"].n_unique() == 5
    for split in ("train", "test"):
        part = data.filter(pl.col("split") == split)
        changed, unchanged = int(part["has_changed"].sum()), int((~part["has_changed"]).sum())
        # has-changed balanced over the split, within max_ratio
        assert 0 < min(changed, unchanged) and max(changed, unchanged) <= 1.5 * min(changed, unchanged)
        # every token type of appendix E.2 has rows, including the single-label "new answer option" cells
        assert set(TOKEN_TYPES) <= set(part["token_type"])
        new_option = part.filter(pl.col("token_type") == "new answer option")
        assert new_option["has_changed"].all() and new_option["chunk"].n_unique() == 4
        # no (token type, layer block) cell over its cap
        assert part.group_by(["token_type", "chunk"]).len()["len"].max() <= 30
    # deterministic for a seed
    assert balance_patching(sweep, settings).equals(data)
    counts = table6({"m": data})
    assert counts["unchanged"].sum() + counts["changed"].sum() == data.height
    assert counts.filter(pl.col("split") == "train")["token_type"].to_list()[:4] == ["subject final"] * 4
    assert {"new answer option", "other answer option", "' or'"} <= set(counts["token_type"])


def test_split_by_original_fact_keeps_every_pair_of_a_statement_together():
    # 10 statements x, 6 counterfactual pairs each; the old split by pair put most statements in both splits
    sweep = e2_sweep(n_facts=10, pairs_per_fact=6)
    data = balance_patching(sweep, BalanceSettings(test_fraction=0.3, max_per_cell=10_000, max_ratio=math.inf))
    assert data.height == sweep.height  # no cap binds: every row kept
    splits = data.group_by("subject").agg(pl.col("split").unique())
    assert all(len(s) == 1 for s in splits["split"])
    assert data.filter(pl.col("split") == "test")["subject"].n_unique() == 3
    # the same subject under another relation is another fact
    other = sweep.with_columns(relation_id=pl.when(pl.col("pair_id") % 2 == 0).then(pl.lit("P17")).otherwise(pl.lit("P36")))
    data = balance_patching(other, BalanceSettings(test_fraction=0.3, max_per_cell=10_000, max_ratio=math.inf))
    assert data.select("relation_id", "subject").n_unique() == 20
    assert data.group_by(["relation_id", "subject"]).agg(pl.col("split").n_unique())["split"].max() == 1


def cell_frame(counts):
    """Rows of one split: {(token type, chunk): (changed, unchanged)}."""
    rows = [(t, c, label) for (t, c), (n_true, n_false) in counts.items()
            for label, n in ((True, n_true), (False, n_false)) for _ in range(n)]
    return pl.DataFrame({"token_type": [r[0] for r in rows], "chunk": [r[1] for r in rows],
                         "has_changed": [r[2] for r in rows]})


def cell_counts(df):
    return {(r["token_type"], r["chunk"]): (r["changed"], r["unchanged"]) for r in
            df.group_by(["token_type", "chunk"]).agg(changed=pl.col("has_changed").sum(),
                                                      unchanged=(~pl.col("has_changed")).sum()).iter_rows(named=True)}


def test_cell_cap_keeps_the_rarer_label_and_single_label_cells():
    df = cell_frame({("relation", 0): (5, 95), ("subject final", 0): (60, 60), ("new answer option", 0): (40, 0)})
    kept = cell_counts(balance_cells(df, ["token_type", "chunk"], "has_changed", max_per_cell=20,
                                     max_ratio=math.inf, seed=0))
    assert kept == {("relation", 0): (5, 15), ("subject final", 0): (10, 10), ("new answer option", 0): (20, 0)}


def test_overall_balance_trims_the_majority_in_the_cells_that_hold_most_of_it():
    df = cell_frame({("relation", 0): (0, 100), ("relation", 1): (10, 10), ("subject final", 0): (40, 0)})
    kept = cell_counts(balance_cells(df, ["token_type", "chunk"], "has_changed", max_per_cell=1000,
                                     max_ratio=1.0, seed=0))
    # 50 changed in all; the 110 unchanged are cut to 50, from the cell with 100 (the other keeps its 10)
    assert kept == {("relation", 0): (0, 40), ("relation", 1): (10, 10), ("subject final", 0): (40, 0)}
    kept = cell_counts(balance_cells(df, ["token_type", "chunk"], "has_changed", 1000, max_ratio=2.0, seed=0))
    assert kept[("relation", 0)] == (0, 90) and kept[("relation", 1)] == (10, 10)


def test_a_split_with_one_label_cannot_be_balanced():
    df = cell_frame({("relation", 0): (0, 30), ("relation", 1): (0, 5)})
    assert balance_cells(df, ["token_type", "chunk"], "has_changed", 100, max_ratio=1.5, seed=0).height == 0
    assert balance_cells(df, ["token_type", "chunk"], "has_changed", 10, max_ratio=math.inf, seed=0).height == 15


@pytest.mark.parametrize("counts, total, expected", [
    ({"a": 5, "b": 40}, 20, {"a": 5, "b": 15}),
    ({"a": 10, "b": 10, "c": 10}, 10, {"a": 4, "b": 3, "c": 3}),
    ({"a": 0, "b": 3, "c": 9}, 7, {"a": 0, "b": 3, "c": 4}),
    ({"a": 2, "b": 1}, 5, {"a": 2, "b": 1}),
    ({"a": 3, "b": 3}, 0, {"a": 0, "b": 0}),
])
def test_level_is_water_filling(counts, total, expected):
    assert level(counts, total) == expected


def test_balancing_the_runs_evens_each_split_and_keeps_questions_apart():
    n = 400
    changed = [i % 5 == 0 for i in range(n)]
    runs = pl.DataFrame({"question_id": [f"q/{i}" for i in range(n)], "has_changed": changed,
                         "hint_letter": ["A"] * n, "answer_plain": ["B"] * n,
                         "answer_hinted": ["A" if c else "B" for c in changed]})
    data = split_and_balance(runs, "question_id", ["split"], "has_changed",
                             BalanceSettings(test_fraction=0.3, max_per_cell=n, max_ratio=1.0, seed=0))
    for split in ("train", "test"):
        part = data.filter(pl.col("split") == split)
        assert part["has_changed"].sum() == (~part["has_changed"]).sum() > 0
    train = set(data.filter(pl.col("split") == "train")["question_id"])
    assert not train & set(data.filter(pl.col("split") == "test")["question_id"])
    t7 = table7({"m": data})
    assert t7["split"].to_list() == ["train", "test"] and (t7["changed"] == t7["unchanged"]).all()
