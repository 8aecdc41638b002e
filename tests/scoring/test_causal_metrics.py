"""Causal-task answers and metrics: parsing of explainer outputs, exact/content match, has-changed F1, mean +- SE."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from introspect.explainers.hints import hint_explanation
from introspect.explainers.statements import CausalExplanation, causal_explanation, parse_causal
from introspect.reporting.statistics import bootstrap_se, mean_se, paired_best
from introspect.scoring.causal import exact_match, has_changed_f1, score_causal

CHANGED = CausalExplanation(has_changed=True, content="Paris", valid=True)
UNCHANGED = CausalExplanation(has_changed=False, content="Paris", valid=True)
INVALID = CausalExplanation(has_changed=None, content=None, valid=False)


# --- parsing ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "text, expected",
    [
        ("The most likely output would change to <<<Paris>>>.", CHANGED),  # trained template (appendix D)
        ("the most likely output would change to <<<Paris>>>.", CHANGED),  # appendix D activation patching
        ("The output would change to <<<Paris>>>.", CHANGED),  # untrained prompts F.2 / F.3
        ("The output would remain unchanged from <<<Paris>>>.", UNCHANGED),
        ("the output would remain unchanged from <<<Paris>>>", UNCHANGED),  # no final period
        ("THE OUTPUT WOULD REMAIN UNCHANGED FROM <<<Paris>>>.", UNCHANGED),  # case-insensitive wording
        ("  The  most\nlikely output   would change to<<<Paris>>>.\n", CHANGED),  # extra whitespace
        ("The output would change to <<< Paris >>>.", CHANGED),  # content strip()-ed
        ("The output would change to <<<Paris>>>. Because the subject is French.", CHANGED),  # trailing text
        ("The output would change to <<<Paris>>>. The output would change to <<<Paris>>>.", CHANGED),  # repeat
        (
            "The output would remain unchanged from <<<Answer: C>>>.",
            CausalExplanation(has_changed=False, content="Answer: C", valid=True),
        ),
        ("The output would change to <<<paris>>>.", CausalExplanation(True, "paris", True)),  # case kept
        ("The output would change to <<<>>>.", CausalExplanation(True, "", True)),
    ],
)
def test_parse_causal_accepts_template_variants(text, expected):
    assert parse_causal(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        None,
        "   \n",
        "I don't know",
        "The output would change to <<<Paris.",  # missing >>>
        "The output would change to Paris.",  # no delimiters
        "The output would change to <<<Paris>>>. The output would remain unchanged from <<<Paris>>>.",  # hedge
        "The output would change to <<<Paris>>>. The output would change to <<<Rome>>>.",  # two contents
        "Sure! The output would change to <<<Paris>>>.",  # preamble
        "The output would change <<<Paris>>>.",  # broken wording
        "The output would change to <<<a <<<b>>>.",  # nested delimiter
    ],
)
def test_parse_causal_rejects_malformed_outputs(text):
    assert parse_causal(text) == INVALID


def test_causal_explanation_is_the_appendix_d_template_and_round_trips():
    assert causal_explanation(True, "Italy") == "The most likely output would change to <<<Italy>>>."
    assert causal_explanation(False, "Answer: B") == "The output would remain unchanged from <<<Answer: B>>>."
    for changed in (True, False):
        assert parse_causal(causal_explanation(changed, "Rome")) == CausalExplanation(changed, "Rome", True)
    with pytest.raises(ValueError, match="delimiter"):
        causal_explanation(True, "a>>>b")


# --- exact and content match -----------------------------------------------------------------------------

def test_exact_match_needs_both_parts_right_whatever_the_wording():
    gold = "The most likely output would change to <<<Paris>>>."
    assert exact_match("the most likely output would change to <<<Paris>>>", gold)
    assert exact_match("The most likely output would change to <<<Paris>>>.\n", gold)
    # the untrained prompts' wording parses to the same two parts (paper 5.1: both parts must be right)
    assert exact_match("The output would change to <<<Paris>>>.", gold)
    assert not exact_match("The most likely output would change to <<<paris>>>.", gold)  # content is exact
    assert not exact_match("The most likely output would change to <<<Rome>>>.", gold)
    assert not exact_match("The output would remain unchanged from <<<Paris>>>.", gold)
    assert not exact_match("", gold)


# --- score_causal ----------------------------------------------------------------------------------------

def test_score_causal_per_item_and_aggregates():
    golds = [
        causal_explanation(True, "Paris"),
        causal_explanation(True, "Rome"),
        causal_explanation(False, "Oslo"),
        causal_explanation(False, "Bern"),
    ]
    preds = [
        "The most likely output would change to <<<Paris>>>.",  # exact, content, changed ok
        "The output would change to <<<Rome>>>.",  # exact (the wording is not compared)
        "The most likely output would change to <<<Oslo>>>.",  # content only
        "I don't know",  # invalid: wrong everywhere
    ]
    s = score_causal(preds, golds, n_boot=200)
    np.testing.assert_array_equal(s["exact"], [1, 1, 0, 0])
    np.testing.assert_array_equal(s["content"], [1, 1, 1, 0])
    np.testing.assert_array_equal(s["changed_correct"], [1, 1, 0, 0])
    np.testing.assert_array_equal(s["valid"], [True, True, True, False])
    np.testing.assert_array_equal(s["pred_changed"], [1, 1, 1, -1])
    assert s["exact_match"] == pytest.approx(50.0)
    assert s["content_match"] == pytest.approx(75.0)
    # changed: tp=2 fp=1 fn=0 -> 4/5; unchanged: tp=0 fp=0 fn=2 -> 0
    assert s["has_changed_f1"] == pytest.approx(40.0)
    assert s["exact_match_se"] == pytest.approx(100 * np.std([1, 1, 0, 0], ddof=1) / 2)
    assert s["has_changed_f1_se"] > 0
    assert s["pred_changed_share"] == pytest.approx(75.0)
    assert s["content_match_changed"] == pytest.approx(100.0)
    assert s["content_match_unchanged"] == pytest.approx(50.0)
    assert (s["n"], s["n_invalid"]) == (4, 1)


def test_score_causal_errors():
    gold = causal_explanation(True, "x")
    with pytest.raises(ValueError, match="1 predictions but 2 golds"):
        score_causal(["a"], [gold, gold])
    with pytest.raises(ValueError, match="gold explanations do not parse"):
        score_causal(["a"], ["not a statement"])
    with pytest.raises(ValueError, match="no predictions"):
        score_causal([], [])


def test_score_causal_content_split_is_nan_without_items():
    s = score_causal([causal_explanation(True, "x")] * 2, [causal_explanation(True, "x")] * 2, n_boot=10)
    assert s["content_match_changed"] == 100.0
    assert math.isnan(s["content_match_unchanged"])
    # macro F1 runs over both classes: "unchanged" is absent from gold and never predicted, so it scores 0
    assert s["has_changed_f1"] == 50.0


def test_has_changed_f1_averages_over_both_classes_when_gold_has_one():
    # issue 18's 4-item example: F1(changed) = 2*3 / (2*3 + 0 + 1) = 6/7, F1(unchanged) = 0 (never in gold,
    # never predicted); the old average over the classes present gave 85.7 instead of 42.9
    assert has_changed_f1([True, True, True, None], [True, True, True, True]) == pytest.approx(3 / 7)
    golds = [causal_explanation(True, "Paris")] * 4
    preds = [causal_explanation(True, "Paris")] * 3 + ["I don't know"]
    assert score_causal(preds, golds, n_boot=20)["has_changed_f1"] == pytest.approx(300 / 7)
    # a class absent from gold but predicted scores 0 as well
    assert has_changed_f1([True, False], [True, True]) == pytest.approx((2 / 3 + 0) / 2)
    assert has_changed_f1([None, None], [False, True]) == 0.0


def test_has_changed_f1_equals_scikit_learn_with_both_labels():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    for n in (1, 2, 3, 5, 20):
        for _ in range(40):
            gold = rng.random(n) < rng.choice([0.0, 0.5, 1.0])  # one-class golds included
            codes = rng.choice([-1, 0, 1], size=n)
            pred = [None if c == -1 else bool(c) for c in codes]
            expected = sklearn_metrics.f1_score(gold.astype(int), codes, labels=[1, 0], average="macro",
                                                zero_division=0)
            assert has_changed_f1(pred, gold.tolist()) == pytest.approx(expected)


# --- mean, standard errors, bolding ----------------------------------------------------------------------

def test_mean_se_values():
    mean, se = mean_se([1, 2, 3, 4])
    assert mean == 2.5
    assert se == pytest.approx(math.sqrt(5 / 3) / 2)  # sample variance 5/3, n = 4
    mean, se = mean_se([5.0])
    assert mean == 5.0 and math.isnan(se)
    with pytest.raises(ValueError):
        mean_se([])


def test_bootstrap_se_of_a_mean_approaches_the_analytic_se_and_is_seeded():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 2, size=400).astype(float)
    se = bootstrap_se(np.mean, x, n_boot=2000, seed=3)
    assert se == pytest.approx(x.std(ddof=0) / math.sqrt(400), rel=0.1)
    assert se == bootstrap_se(np.mean, x, n_boot=2000, seed=3)
    assert se != bootstrap_se(np.mean, x, n_boot=2000, seed=4)


def test_bootstrap_se_keeps_arrays_paired_and_checks_lengths():
    gold = [True, False] * 10
    # a perfect predictor stays perfect in every resample: SE 0
    assert bootstrap_se(has_changed_f1, gold, gold, n_boot=50) == 0.0
    with pytest.raises(ValueError, match="differ in length"):
        bootstrap_se(has_changed_f1, [True], [True, False])


def test_paired_best_on_a_hand_made_table():
    a = np.array([1, 1, 1, 0, 1, 1, 1, 1.0])  # best, mean 0.875
    b = np.array([1, 0, 1, 0, 1, 1, 0, 1.0])  # a - b = [0,1,0,0,0,0,1,0]: t = 0.25 / (sqrt(1.5/7)/sqrt(8))
    c = np.zeros(8)  # a - c = a: t = 0.875 / (sqrt(0.125)/sqrt(8)) = 7
    t_ab = 0.25 / (math.sqrt(1.5 / 7) / math.sqrt(8))
    p_ab = 2 * stats.t.sf(t_ab, df=7)
    p_ac = 2 * stats.t.sf(7.0, df=7)
    assert stats.ttest_rel(a, b).pvalue == pytest.approx(p_ab)
    assert p_ab > 0.05 > p_ac
    assert paired_best({"a": a, "b": b, "c": c}) == {"a", "b"}
    assert paired_best({"a": a, "b": b, "c": c}, alpha=0.2) == {"a"}  # p_ab ~ 0.17


def test_paired_best_identical_rows_ties_and_constant_differences():
    a = np.array([1, 0, 1, 1.0])
    assert paired_best({"a": a, "a_copy": a.copy()}) == {"a", "a_copy"}  # p = nan: not different
    assert paired_best({"ones": np.ones(4), "zeros": np.zeros(4)}) == {"ones"}  # constant difference: p = 0
    assert paired_best({"only": a}) == {"only"}
    assert paired_best({}) == set()


def test_paired_best_with_a_reference_and_errors():
    a = np.array([1, 1, 1, 1, 1, 1, 1, 1.0])
    z = np.zeros(8)
    assert paired_best({"a": a, "z": z}, reference="z") == {"z"}
    with pytest.raises(ValueError, match="lengths differ"):
        paired_best({"a": a, "short": a[:5]})
    with pytest.raises(ValueError, match="not all finite"):
        paired_best({"a": a, "nan": np.full(8, np.nan)})
    with pytest.raises(ValueError, match="reference row 'x'"):
        paired_best({"a": a}, reference="x")


def test_letter_explanations_score_with_unparseable_outputs():
    golds = [hint_explanation({"has_changed": c, "answer_plain": a}) for c, a in [(True, "A"), (False, "C"), (True, "D")]]
    preds = ["The output would change to <<<Answer: A>>>.", "The output would remain unchanged from <<<Answer: B>>>.",
             "Answer: D"]
    s = score_causal(preds, golds, n_boot=50)
    assert list(s["exact"]) == [1, 0, 0] and list(s["changed_correct"]) == [1, 1, 0] and s["n_invalid"] == 1
