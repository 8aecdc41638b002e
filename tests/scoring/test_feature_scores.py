"""Scores of feature descriptions: the best of several candidates, and one method's scores with invalid replies."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

KEY = "sk-score-test-0123456789"


def test_best_of_candidates_for_judge_and_alignment_checks():
    from introspect.scoring.features import candidate_texts, judge_best

    class Judge:  # 1.0 when the text equals the expected label, 0.25 otherwise, None for "?"
        def scores(self, predicted, expected):
            return [None if p == "?" else (1.0 if p == e else 0.25) for p, e in zip(predicted, expected)]

    items = pl.DataFrame({"item_id": ["a", "b", "c"]})
    preds = pl.DataFrame({"item_id": ["a", "b", "c", "a", "b", "c"], "prediction": ["x", "?", "?", "cat", "z", "?"],
                          "candidate": ["1v", "1v", "1v", "5v", "5v", "5v"]})
    candidates = candidate_texts(items, preds)
    assert candidates == [["x", "cat"], ["?", "z"], ["?", "?"]]
    assert judge_best(Judge(), candidates, ["cat", "dog", "eel"]) == ([1.0, 0.25, None], [0, 1, 2])
    with pytest.raises(ValueError, match="exactly the eval set's 4 items"):
        candidate_texts(pl.DataFrame({"item_id": ["a", "b", "c", "d"]}), preds)
    with pytest.raises(ValueError, match="exactly"):  # one prediction per item unless candidates are marked
        candidate_texts(items, preds.drop("candidate"))


WINDOWS = pl.DataFrame({"tokens": [["The", " cat"], ["my", " cat", "!"], ["a", " dog"], ["no", " cat", " here"]]},
                       schema={"tokens": pl.List(pl.String)})


def eval_items(labels):
    """Two items on the four windows (n_top 2: windows 1 and 3 are the check half the simulator scores)."""
    acts = [[0.0, 1.0], [0.0, 4.0, 0.0], [0.0, 0.0], [0.0, 2.0, 0.0]]
    return pl.DataFrame({"item_id": ["a", "b"], "windows": [[0, 1, 2, 3]] * 2, "activations": [acts] * 2,
                         "label": labels}, schema={"item_id": pl.String, "windows": pl.List(pl.Int64),
                                                   "activations": pl.List(pl.List(pl.Float64)), "label": pl.String})


def test_invalid_replies_are_counted_per_item_and_asked_again_by_a_rerun(server, tmp_path, monkeypatch):
    """Issue 19 end to end through the scoring job's library function and a stub server: invalid judge and
    simulator replies give n_invalid per item (the judge's item scores 0); once the server is healthy, a re-run
    asks for exactly those replies again and scores them; a third run sends nothing."""
    from introspect.scoring.features import SCORES_SCHEMA, score_method
    from introspect.scoring.judges import OpenAIJudge
    from introspect.scoring.simulators import OpenAISimulator

    monkeypatch.setenv("SCORE_KEY", KEY)
    predictions = pl.DataFrame({"item_id": ["a", "b"], "prediction": ["mentions of cats", "mentions of dogs"]})
    evalsets = [("sae", eval_items(["felines", "canines"]), predictions, "sae.parquet"),
                ("act", eval_items([None, None]), predictions, "act.parquet")]

    def run():
        sim = OpenAISimulator("sim", cache_dir=tmp_path / "simulator", base_url=server.url, api_key_env="SCORE_KEY",
                              concurrency=4)
        judge = OpenAIJudge("judge", cache_dir=tmp_path / "judge", base_url=server.url, api_key_env="SCORE_KEY",
                            concurrency=4)
        scores = score_method(evalsets, WINDOWS, sim, judge, n_top=2)
        assert dict(scores.schema) == SCORES_SCHEMA
        return scores, sim.http_requests + judge.http_requests

    # an unhealthy server: the judge's dogs pair and every simulator request on window 3 come back unparseable
    server.rules = {"Predicted: mentions of dogs\n": "verbose-rating", '" here"': "prose"}
    scores, sent = run()
    by = {(r["metric"], r["item_id"]): (r["value"], r["n_invalid"]) for r in scores.iter_rows(named=True)}
    assert scores["metric"].to_list() == ["sae_simulator"] * 2 + ["sae_judge"] * 2 + ["act_simulator"] * 2
    assert by[("sae_judge", "a")] == (1.0, 0) and by[("sae_judge", "b")] == (0.0, 1)  # only invalid: scores 0
    assert by[("sae_simulator", "a")] == (pytest.approx(1.0), 1)  # window 1 alone: (0, 10, 0) vs (0, 4, 0)
    assert by[("sae_simulator", "b")][1] == 1 and by[("act_simulator", "a")][1] == 1
    # simulator: 2 descriptions x 2 windows for sae, and act (the same requests) asks the 2 invalid ones again;
    # judge: 2 pairs
    assert sent == 4 + 2 + 2
    server.rules = {}
    again, sent = run()
    assert sent == 3 and again["n_invalid"].to_list() == [0] * 6  # the 3 invalid replies, asked again
    by = {(r["metric"], r["item_id"]): r["value"] for r in again.iter_rows(named=True)}
    assert by[("sae_judge", "b")] == 0.25  # the stub rates dogs 2
    # both check windows now: the stub's (0, 10, 0, 0, 10, 0) against the true (0, 4, 0, 0, 2, 0)
    assert by[("sae_simulator", "a")] == pytest.approx(np.corrcoef([0, 10, 0, 0, 10, 0], [0, 4, 0, 0, 2, 0])[0, 1])
    third, sent = run()
    assert sent == 0 and third.equals(again)
