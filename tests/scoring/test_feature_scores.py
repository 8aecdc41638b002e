"""Scores of feature descriptions: the best of several candidates."""

from __future__ import annotations

import polars as pl
import pytest


def test_best_of_candidates_for_judge_and_alignment_checks():
    from introspect.scoring.features import candidate_texts, judge_best

    class Judge:  # 1.0 when the text equals the expected label, 0.25 otherwise, None for "?"
        def scores(self, predicted, expected):
            return [None if p == "?" else (1.0 if p == e else 0.25) for p, e in zip(predicted, expected)]

    items = pl.DataFrame({"item_id": ["a", "b", "c"]})
    preds = pl.DataFrame({"item_id": ["a", "b", "c", "a", "b", "c"], "prediction": ["x", "y", "?", "cat", "z", "?"],
                          "candidate": ["1v", "1v", "1v", "5v", "5v", "5v"]})
    candidates = candidate_texts(items, preds)
    assert candidates == [["x", "cat"], ["y", "z"], ["?", "?"]]
    assert judge_best(Judge(), candidates, ["cat", "dog", "eel"]) == [1.0, 0.25, None]
    with pytest.raises(ValueError, match="exactly the eval set's 4 items"):
        candidate_texts(pl.DataFrame({"item_id": ["a", "b", "c", "d"]}), preds)
    with pytest.raises(ValueError, match="exactly"):  # one prediction per item unless candidates are marked
        candidate_texts(items, preds.drop("candidate"))
