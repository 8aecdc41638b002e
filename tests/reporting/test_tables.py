"""Result tables: mean +- SE cells, paper-style bold by paired t-test within a group, CSV and Markdown output."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
from scipy import stats

from introspect.explainers.statements import causal_explanation
from introspect.reporting.tables import (
    build_metric_table,
    format_cell,
    long_scores,
    table_metrics,
    to_markdown,
    write_table,
)
from introspect.scoring.causal import score_causal

A = [1, 1, 1, 0, 1, 1, 1, 1]  # mean 0.875
B = [1, 0, 1, 0, 1, 1, 0, 1]  # mean 0.625; paired with A: p ~ 0.17 (not different)
C = [0, 0, 0, 0, 0, 0, 0, 0]  # paired with A: p ~ 0.0002 (different)


def scores_frame() -> pl.DataFrame:
    """Two targets; Qwen3 has three explainers on items 0-7, Llama two explainers on items 100-103."""
    ids = list(range(8))
    frames = [
        long_scores({"exact": A, "changed_correct": C}, row="Qwen3", item_ids=ids, group="Qwen3"),
        long_scores({"exact": B, "changed_correct": A}, row="- activation", item_ids=ids, group="Qwen3"),
        long_scores({"exact": C, "changed_correct": B}, row="Llama", item_ids=ids, group="Qwen3"),
        long_scores({"exact": [1, 1, 0, 0], "changed_correct": [1, 1, 1, 1]}, "Llama", [100, 101, 102, 103], "Llama"),
        long_scores({"exact": [0, 1, 0, 1], "changed_correct": [0, 0, 0, 0]}, "Qwen3", [103, 102, 101, 100], "Llama"),
    ]
    return pl.concat(frames)


def aggregates_frame() -> pl.DataFrame:
    """Has-changed F1 per (group, row) in display units, as score_causal gives it."""
    return pl.DataFrame(
        {
            "group": ["Qwen3", "Qwen3", "Qwen3", "Llama", "Llama"],
            "row": ["Qwen3", "- activation", "Llama", "Llama", "Qwen3"],
            "metric": ["has_changed_f1"] * 5,
            "mean": [30.0, 80.0, 60.0, 77.5, 20.0],
            "se": [1.0, 0.5, 0.6, 0.6, 0.9],
        }
    )


def build(**kwargs) -> pl.DataFrame:
    return build_metric_table(
        scores_frame(),
        ["exact", "has_changed_f1"],
        aggregates=aggregates_frame(),
        proxies={"has_changed_f1": "changed_correct"},
        scale=100,
        **kwargs,
    )


def test_format_cell():
    assert format_cell(64.04, 0.41) == "64.0 ± 0.4"
    assert format_cell(0.6404, 0.0041, scale=100) == "64.0 ± 0.4"
    assert format_cell(5.023, 0.2, digits=2) == "5.02 ± 0.20"
    assert format_cell(5.0, math.nan) == "5.0 ± nan"


def test_table_columns_order_and_types():
    table = build()
    assert table.columns == [
        "group", "row", "n",
        "exact_mean", "exact_se", "exact_best",
        "has_changed_f1_mean", "has_changed_f1_se", "has_changed_f1_best",
    ]
    assert table.select("group", "row").rows() == [
        ("Qwen3", "Qwen3"), ("Qwen3", "- activation"), ("Qwen3", "Llama"), ("Llama", "Llama"), ("Llama", "Qwen3"),
    ]
    assert table["n"].to_list() == [8, 8, 8, 4, 4]
    assert table.schema["exact_best"] == pl.Boolean
    assert table_metrics(table) == ["exact", "has_changed_f1"]


def test_table_means_ses_and_bold_by_paired_test_within_groups():
    table = build()
    assert table["exact_mean"].to_list() == pytest.approx([87.5, 62.5, 0.0, 50.0, 50.0])
    assert table["exact_se"][0] == pytest.approx(100 * np.std(A, ddof=1) / math.sqrt(8))
    # Qwen3 group: A best; B not significantly worse (p ~ 0.17); C significantly worse
    assert stats.ttest_rel(A, B).pvalue > 0.05 > stats.ttest_rel(A, C).pvalue
    # Llama group: equal means; by item id Llama [1,1,0,0], Qwen3 [1,0,1,0]: differences [0,1,-1,0], p = 1
    assert table["exact_best"].to_list() == [True, True, False, True, True]


def test_aggregate_metric_reads_given_values_and_tests_on_the_proxy():
    table = build()
    # mean and SE as given (display units; `scale` is not applied to aggregates)
    assert table["has_changed_f1_mean"].to_list() == [30.0, 80.0, 60.0, 77.5, 20.0]
    assert table["has_changed_f1_se"].to_list() == [1.0, 0.5, 0.6, 0.6, 0.9]
    # Qwen3 group: reference is '- activation' (F1 80); proxy changed_correct A vs B (p ~ 0.17) and
    # A vs C (p ~ 0.0002). Llama group: reference 'Llama'; proxy ones vs zeros differ at p = 0.
    assert table["has_changed_f1_best"].to_list() == [False, True, True, True, False]


def test_markdown_bolds_best_cells_and_blanks_repeated_groups():
    md = to_markdown(build(), labels={"exact": "Exact Match", "has_changed_f1": "Has-Changed F1", "group": "Target"})
    lines = md.strip().splitlines()
    assert lines[0] == "| Target | row | n | Exact Match | Has-Changed F1 |"
    assert lines[1] == "|---|---|---|---|---|"
    assert lines[2] == "| Qwen3 | Qwen3 | 8 | **87.5 ± 12.5** | 30.0 ± 1.0 |"
    assert lines[3] == "|  | - activation | 8 | **62.5 ± 18.3** | **80.0 ± 0.5** |"
    assert lines[4] == "|  | Llama | 8 | 0.0 ± 0.0 | **60.0 ± 0.6** |"
    assert lines[5] == "| Llama | Llama | 4 | **50.0 ± 28.9** | **77.5 ± 0.6** |"
    assert len(lines) == 7


def test_html_page_shows_the_same_cells_as_the_markdown():
    from introspect.reporting.tables import to_html

    page = to_html(build(), "Table X: <test>", notes=["a & b"], labels={"group": "Target"})
    assert "<title>Table X: &lt;test&gt;</title>" in page and "<th>Target</th>" in page
    assert "<td><b>87.5 ± 12.5</b></td><td>30.0 ± 1.0</td>" in page  # bold where the Markdown has **
    assert "<li>a &amp; b</li>" in page and page.count("<tr>") == 6  # header + 5 rows


def test_a_pipe_in_a_cell_is_escaped_in_markdown_only():
    table = pl.DataFrame({"token_type": ["' |'"], "changed": [1]})
    assert "| ' \\|' | 1 |" in to_markdown(table)


def test_extra_columns_pass_through_markdown():
    table = build().join(
        pl.DataFrame({
            "group": ["Qwen3"] * 3 + ["Llama"] * 2,
            "row": ["Qwen3", "- activation", "Llama", "Llama", "Qwen3"],
            "n_invalid": [0, 3, 1, 0, 2],
        }),
        on=["group", "row"], how="left", maintain_order="left",
    )
    lines = to_markdown(table).strip().splitlines()
    assert lines[0].endswith("| n_invalid |")
    assert lines[3].endswith("| 3 |")


def test_table_without_group_column():
    scores = pl.concat([
        long_scores({"exact": A}, row="x", item_ids=range(8)),
        long_scores({"exact": C}, row="y", item_ids=range(8)),
    ])
    table = build_metric_table(scores, ["exact"])
    assert table.columns == ["row", "n", "exact_mean", "exact_se", "exact_best"]
    assert table["exact_mean"].to_list() == [0.875, 0.0]
    assert table["exact_best"].to_list() == [True, False]


def test_rows_are_paired_on_item_id_not_position():
    x = np.arange(8.0)
    y = x + np.array([0.1, 0.2] * 4)  # better than x on every item, by a small steady margin
    ids = list(range(8))
    scores = pl.concat([
        long_scores({"v": x}, row="x", item_ids=ids),
        long_scores({"v": y[::-1]}, row="y", item_ids=ids[::-1]),  # same items, listed in reverse
    ])
    assert stats.ttest_rel(y, x).pvalue < 0.05 < stats.ttest_rel(y[::-1], x).pvalue
    assert build_metric_table(scores, ["v"])["v_best"].to_list() == [False, True]


def test_missing_items_name_the_rows():
    dropped = (pl.col("row") == "Llama") & (pl.col("group") == "Qwen3") & (pl.col("item_id") == 5)
    scores = scores_frame().filter(~dropped)
    with pytest.raises(ValueError, match=r"group 'Qwen3', metric 'exact'.*'Llama' lacks 1 of 8 \(e.g. item 5\)"):
        build_metric_table(scores, ["exact"])


def test_duplicate_items_and_missing_metrics_and_aggregates_are_errors():
    scores = scores_frame()
    with pytest.raises(ValueError, match="duplicate item ids for rows \\['Qwen3'\\]"):
        build_metric_table(pl.concat([scores, scores.head(1)]), ["exact"])
    with pytest.raises(ValueError, match="'content' has no per-item scores"):
        build_metric_table(scores, ["content"])
    with pytest.raises(ValueError, match="no values for rows \\['Llama'\\]"):
        build_metric_table(
            scores.filter(~((pl.col("row") == "Llama") & (pl.col("metric") == "exact"))), ["exact"]
        )
    with pytest.raises(ValueError, match="need their aggregate values"):
        build_metric_table(scores, ["has_changed_f1"], proxies={"has_changed_f1": "changed_correct"})
    with pytest.raises(ValueError, match="expected one entry for group 'Llama', row 'Qwen3'"):
        build_metric_table(
            scores, ["has_changed_f1"], aggregates=aggregates_frame().head(4),
            proxies={"has_changed_f1": "changed_correct"},
        )


def test_score_causal_output_feeds_the_table():
    golds = [causal_explanation(i % 2 == 0, str(i)) for i in range(6)]
    good = list(golds)
    bad = ["I don't know"] * 6
    frames, aggs = [], []
    for name, preds in [("trained", good), ("untrained", bad)]:
        s = score_causal(preds, golds, n_boot=50)
        frames.append(long_scores({k: s[k] for k in ("exact", "content", "changed_correct")}, name, range(6), "M"))
        aggs.append({"group": "M", "row": name, "metric": "has_changed_f1",
                     "mean": s["has_changed_f1"], "se": s["has_changed_f1_se"]})
    table = build_metric_table(
        pl.concat(frames), ["exact", "has_changed_f1", "content"], aggregates=pl.DataFrame(aggs),
        proxies={"has_changed_f1": "changed_correct"}, scale=100,
    )
    assert table["exact_mean"].to_list() == [100.0, 0.0]
    assert table["has_changed_f1_mean"].to_list() == [100.0, 0.0]
    assert table["content_best"].to_list() == [True, False]


def test_write_table_csv_and_markdown(tmp_path):
    table = build()
    csv, md = tmp_path / "out" / "table2.csv", tmp_path / "out" / "table2.md"
    write_table(table, csv, md, title="Table 2: activation patching", notes=["Bold: paired t-test p >= 0.05."])
    lines = csv.read_text().splitlines()
    assert lines[0] == ",".join(table.columns)
    assert lines[1] == "Qwen3,Qwen3,8,87.500000,12.500000,true,30.000000,1.000000,false"
    assert pl.read_csv(csv).shape == table.shape
    text = md.read_text()
    assert text.startswith("# Table 2: activation patching\n\n| group | row | n | exact | has_changed_f1 |\n")
    assert "| **87.5 ± 12.5** |" in text
    assert text.endswith("\n- Bold: paired t-test p >= 0.05.\n")
    first = csv.read_bytes()
    write_table(build(), csv, md, title="Table 2: activation patching", notes="Bold: paired t-test p >= 0.05.")
    assert csv.read_bytes() == first  # deterministic
