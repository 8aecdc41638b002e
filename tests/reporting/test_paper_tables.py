"""The paper's tables as frames (Tables 1-7)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from introspect.explainers.hints import hint_explanation
from introspect.reporting.paper_tables import answer_diversity, table3_frame, table5, table7


def test_table1_marks_rows_not_worse_than_the_best_by_paired_t_test():
    from introspect.reporting.paper_tables import table1_frame

    rng = np.random.default_rng(0)
    base = rng.uniform(0, 1, 40)
    rows = {"self": base + 0.3, "close": base + 0.29 + rng.normal(0, 0.05, 40), "nn": base, "gold": None}
    parts = []
    for row, values in rows.items():
        for metric in ("sae_judge", "sae_simulator") + (() if row == "gold" else ("act_simulator", "dact_simulator")):
            v = np.ones(40) if values is None else values
            parts.append(pl.DataFrame({"row": row, "item_id": [f"i{k}" for k in range(40)], "metric": metric,
                                       "value": v}))
    table = table1_frame(pl.concat(parts))
    assert table["row"].to_list() == ["self", "close", "nn", "gold"]
    judge_best_rows = dict(zip(table["row"], table["sae_judge_best"]))
    assert judge_best_rows == {"self": False, "close": False, "nn": False, "gold": True}
    act_best = dict(zip(table["row"], table["act_simulator_best"]))
    assert act_best["self"] and act_best["close"] and not act_best["nn"] and act_best["gold"] is None
    assert table.filter(pl.col("row") == "nn")["act_simulator_mean"][0] == pytest.approx(base.mean() * 100)


def test_answer_diversity_counts_distinct_and_exact_answers():
    items = pl.DataFrame({"item_id": ["a", "b", "c"], "label": ['the word "is"', "numbers", "Python keywords"]})
    collapsed = pl.DataFrame({"item_id": ["c", "b", "a"], "prediction": ['the word "is"'] * 3})
    assert answer_diversity(collapsed, items) == {"items": 3, "distinct": 1, "exact": 1}
    varied = pl.DataFrame({"item_id": ["a", "b", "c", "z"],  # an item outside the eval set is ignored
                           "prediction": ['The  word "is"', "dates", "python keywords ", "x"]})
    assert answer_diversity(varied, items) == {"items": 3, "distinct": 3, "exact": 2}
    with pytest.raises(ValueError, match="1 held-out items have no prediction"):
        answer_diversity(varied.filter(pl.col("item_id") != "b"), items)


@pytest.mark.parametrize("settings,align,hidden,recipe", [
    ({"tuning": "full", "projection": "none", "train_embeddings": True, "vector_norm": None}, "depth", 64, "paper"),
    ({"tuning": "full", "projection": "none", "train_embeddings": True, "vector_norm": 3.2071}, "depth", 64,
     "not the paper's: v rescaled to norm 3.21"),
    ({"tuning": "full", "projection": "none", "train_embeddings": False, "vector_norm": 3.2}, "depth", 64,
     "not the paper's: embeddings frozen, v rescaled to norm 3.2"),
    ({"tuning": "lora", "projection": "none", "train_embeddings": False, "vector_norm": None}, "depth", 64,
     "paper: LoRA"),  # embeddings are not LoRA-tuned anyway
    ({"tuning": "full", "projection": "pretrained", "target_hidden": 64, "vector_norm": None}, "input", 64,
     "not the paper's: Pi_l pre-trained onto the input embedding"),
    ({"tuning": "full", "projection": "pretrained", "target_hidden": 64}, "depth", 80,
     "paper: Pi_l pre-trained at the same depth"),
    ({"tuning": "full", "projection": "random", "target_hidden": 64}, "depth", 80, "paper: random Pi_l"),
    ({"tuning": "full", "projection": "random", "target_hidden": 64}, "depth", 64,
     "not the paper's: random Pi_l between equal hidden sizes"),
    ({"tuning": "lora", "projection": "random", "target_hidden": 64, "projection_tuning": "full"}, "depth", 80,
     "not the paper's: Pi_l trained in full under LoRA, LoRA, random Pi_l"),
])
def test_explainer_recipe_names_what_differs_from_the_paper(settings, align, hidden, recipe):
    from introspect.reporting.paper_tables import explainer_recipe

    assert explainer_recipe(settings, align=align, explainer_hidden=hidden) == recipe


def feature_scores(values, n_invalid, metrics=("sae_judge", "sae_simulator")):
    return pl.DataFrame({"item_id": [f"i{k}" for k in range(len(values))] * len(metrics),
                         "metric": [m for m in metrics for _ in values], "value": list(values) * len(metrics),
                         "n_invalid": list(n_invalid) * len(metrics)})


def test_feature_table_has_recipe_n_train_and_invalid_reply_columns(tmp_path):
    from introspect.reporting.paper_tables import feature_table, write_feature_table

    items = pl.DataFrame({"item_id": ["i0", "i1", "i2"], "label": ["a", "b", "c"]})
    predictions = {m: pl.DataFrame({"item_id": ["i0", "i1", "i2"], "prediction": ["a", "x", "c"]})
                   for m in ("self", "nn_all", "gold")}
    scores = {"self": feature_scores([1.0, 0.0, 0.5], [0, 2, 1]), "nn_all": feature_scores([0.5, 0.5, 0.0], [0, 0, 0]),
              "gold": feature_scores([1.0, 1.0, 1.0], [0, 0, 0])}
    table = feature_table(scores, predictions, items, {"nn_all": "NN-all", "gold": "gold SAE labels"},
                          ["sae_judge", "sae_simulator"], n_train={"self": 2000, "nn_all": 2000},
                          recipes={"self": "paper"})
    assert table["row"].to_list() == ["self", "NN-all", "gold SAE labels"]
    assert table.columns[0] == "row" and table.columns[-3:] == ["n_train", "n_invalid", "recipe"]
    assert table["recipe"].to_list() == ["paper", None, None] and table["n_train"].to_list() == [2000, 2000, None]
    assert table["n_invalid"].to_list() == [6, 0, 0]  # 3 invalid replies behind each of the two columns
    one = feature_table(scores, predictions, items, {}, ["sae_judge"])  # Table 4: the judge column only
    assert one["n_invalid"].to_list() == [3, 0, 0]
    write_feature_table(table, tmp_path / "t.csv", tmp_path / "t.md", title="Table 1", target="m", judge="openai",
                        simulator="embedding", metrics=["sae_judge", "sae_simulator"], n_items=3,
                        correlation="per_exemplar")
    text = (tmp_path / "t.md").read_text()
    assert text.startswith("# Table 1: describing m's features (mean ± SE x 100; simulator score: per_exemplar)")
    assert "equation 2 as printed" in text and "| n_train | n_invalid | recipe |" in text
    assert "| gold SAE labels | **100.0 ± 0.0** |" in text  # the metric columns come right after the row name
    write_feature_table(table, tmp_path / "t.csv", tmp_path / "t.md", title="Table 1", target="m", judge="openai",
                        simulator="embedding", metrics=["sae_judge", "sae_simulator"], n_items=3)
    assert "concatenated tokens" in (tmp_path / "t.md").read_text()
    with pytest.raises(ValueError, match="no n_invalid column .* re-run their features_score jobs"):
        feature_table({"self": scores["self"].drop("n_invalid")}, {}, items, {}, ["sae_judge"])


def test_table5_averages_over_layers_in_percent():
    layers = [
        {"layer": 3, "explainer_layer": 2, "projection": "none", "tokens": 100, "dot_mean": 0.91234,
         "dot_sd": 0.1, "features": 5, "pattern_mean": 0.5, "pattern_sd": 0.2},
        {"layer": 7, "explainer_layer": 5, "projection": "none", "tokens": 50, "dot_mean": 0.8,
         "dot_sd": 0.3, "features": 0, "pattern_mean": None, "pattern_sd": None},
    ]
    out = table5([{"target": "t", "explainer": "e", "layers": layers},
                  {"target": "t", "explainer": "f", "layers": []}])
    assert out.height == 2
    row = out.row(0, named=True)
    assert row == {"target": "t", "explainer": "e", "layers": "3->2, 7->5", "projection": "none",
                   "sae_pattern_similarity": 50.0, "sae_pattern_sd": 20.0,
                   "dot_product_similarity": 85.62, "dot_product_sd": 20.0, "tokens": 150, "features": 5}
    empty = out.row(1, named=True)
    assert empty["dot_product_similarity"] is None and empty["tokens"] == 0 and empty["projection"] == "none"


def test_table3_is_grouped_by_explainer_in_first_appearance_order():
    gold = hint_explanation({"has_changed": True, "answer_plain": "A"})
    pred = pl.DataFrame({"item_id": ["a", "b"], "gold": [gold, gold], "prediction": [gold, "nonsense"]})
    rows = [("t1", "e1", "trained"), ("t1", "e2", "trained"), ("t2", "e1", "trained")]
    table = table3_frame(rows, [pred, pred, pred])
    assert table["group"].to_list() == ["e1", "e1", "e2"]
    assert table["row"].to_list() == ["t1 (trained)", "t2 (trained)", "t1 (trained)"]


def test_causal_table_markdown_shows_the_csv_percentages(tmp_path):
    from introspect.reporting.paper_tables import write_causal_table

    gold = hint_explanation({"has_changed": True, "answer_plain": "A"})
    other = hint_explanation({"has_changed": False, "answer_plain": "B"})
    pred = pl.DataFrame({"item_id": list("abcd"), "gold": [gold, gold, other, other],
                         "prediction": [gold, other, other, "nonsense"]})
    table = table3_frame([("t", "e", "trained")], [pred])
    write_causal_table(table, tmp_path / "t.csv", tmp_path / "t.md", "table3")
    csv = pl.read_csv(tmp_path / "t.csv")
    assert csv["exact_mean"][0] == pytest.approx(50.0) and csv["said_changed"][0] == pytest.approx(25.0)
    markdown = (tmp_path / "t.md").read_text()
    assert f"50.0 ± {csv['exact_se'][0]:.1f}" in markdown and "5000" not in markdown


def test_table3_compares_targets_of_one_explainer_on_different_items():
    gold = hint_explanation({"has_changed": True, "answer_plain": "A"})
    good = pl.DataFrame({"item_id": [f"a{i}" for i in range(30)], "gold": [gold] * 30, "prediction": [gold] * 30})
    bad = pl.DataFrame({"item_id": [f"b{i}" for i in range(30)], "gold": [gold] * 30,
                        "prediction": [gold] * 3 + ["no"] * 27})
    table = table3_frame([("t1", "e", "trained"), ("t2", "e", "trained")], [good, bad])
    assert table["exact_best"].to_list() == [True, False]


def test_table7_counts_and_switch_rate_over_rows_whose_hint_differs():
    def data(plain, hint, hinted, split):
        return pl.DataFrame({"answer_plain": list(plain), "hint_letter": list(hint), "answer_hinted": list(hinted),
                             "split": [split] * len(plain)}).with_columns(
            has_changed=pl.col("answer_plain") != pl.col("answer_hinted"))

    # train: 2 hints equal the unhinted answer, 2 switch, 1 changes elsewhere, 1 ignores; test: nothing differs
    target_b = pl.concat([data("AACCCC", "AABBBB", "AABBDC", "test"), data("AACCCC", "AABBBB", "AABBDC", "train")])
    target_a = pl.concat([data("ABC", "ABC", "DBC", "train"), data("AB", "AB", "AB", "test")])
    table = table7({"b": target_b, "a": target_a})
    assert table.columns == ["target", "split", "changed", "unchanged", "hint_differs", "switched", "switch_rate"]
    assert table.rows() == [("a", "train", 1, 2, 0, 0, None), ("a", "test", 0, 2, 0, 0, None),
                            ("b", "train", 3, 3, 4, 2, 0.5), ("b", "test", 3, 3, 4, 2, 0.5)]
