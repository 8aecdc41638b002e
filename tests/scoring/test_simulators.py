"""Simulation scoring, and the OpenAI-compatible simulator against a real HTTP stub server on 127.0.0.1."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from openai_stub import TOKEN_LINE

from introspect.scoring.simulators import (
    Exemplar,
    OpenAISimulator,
    SimulatorError,
    parse_reply,
    simulation_messages,
    simulation_score,
)

KEY = "sk-test-secret-0123456789"
MODEL = "stub-simulator"


@pytest.fixture
def key(monkeypatch):
    monkeypatch.setenv("SIM_TEST_KEY", KEY)
    return "SIM_TEST_KEY"


def simulator(server, tmp_path, key, **kw) -> OpenAISimulator:
    kw = {"max_retries": 3, "timeout": 5.0, **kw}
    return OpenAISimulator(MODEL, base_url=server.url, api_key_env=key, cache_dir=tmp_path / "cache", **kw)


EXEMPLARS = [
    Exemplar(("The", " cat", " sat", " down"), (0.0, 5.0, -1.0, 0.2)),
    Exemplar(("A", " dog", " and", " a", " Cat"), (-2.0, 0.0, 0.0, 0.0, 3.0)),
]


# --------------------------------------------------------------------------------------------------
# scoring


def test_pearson_by_hand():
    # x = (1, 2, 3), y = (1, 3, 2): deviations (-1, 0, 1) and (-1, 1, 0), so r = 1 / sqrt(2 * 2) = 0.5
    exemplars = [Exemplar(("a", "b"), (1.0, 3.0)), Exemplar(("c",), (2.0,))]
    assert simulation_score([[1, 2], [3]], exemplars) == pytest.approx(0.5)
    assert simulation_score([[3, 2], [1]], exemplars) == pytest.approx(-0.5)


def test_true_activations_clipped_at_zero():
    exemplars = [Exemplar(("a", "b", "c"), (-5.0, 0.0, 3.0))]
    assert simulation_score([[0, 0, 1]], exemplars) == pytest.approx(1.0)  # unclipped it would be 0.79


def test_constant_side_gives_nan():
    exemplars = [Exemplar(("a", "b", "c"), (0.0, 1.0, 2.0))]
    assert math.isnan(simulation_score([[4, 4, 4]], exemplars))
    assert math.isnan(simulation_score([[0, 1, 2]], [Exemplar(("a", "b", "c"), (-1.0, -2.0, 0.0))]))
    assert math.isnan(simulation_score([], []))


def test_per_exemplar_correlation_is_equation_2_as_printed():
    # exemplar 1: r = 1; exemplar 2: r = -0.5 (below); exemplar 3: the feature never fires (clipped truth 0, 0),
    # so it has no correlation and is left out of the mean
    exemplars = [Exemplar(("a", "b"), (0.0, 2.0)), Exemplar(("c", "d", "e"), (1.0, 3.0, 2.0)),
                 Exemplar(("f", "g"), (0.0, -1.0))]
    predicted = [[0, 1], [3, 2, 1], [5, 0]]
    # exemplar 2: x = (3, 2, 1), y = (1, 3, 2): deviations (1, 0, -1), (-1, 1, 0): r = -1 / 2
    assert simulation_score(predicted, exemplars, "per_exemplar") == pytest.approx((1.0 - 0.5) / 2)
    concatenated = simulation_score(predicted, exemplars)
    assert concatenated == pytest.approx(np.corrcoef([0, 1, 3, 2, 1, 5, 0], [0, 2, 1, 3, 2, 0, 0])[0, 1])
    assert concatenated != pytest.approx(0.25)  # the two definitions differ
    assert math.isnan(simulation_score([[5, 0]], exemplars[2:], "per_exemplar"))  # defined for no exemplar
    with pytest.raises(ValueError, match="unknown definition 'pooled'"):
        simulation_score(predicted, exemplars, "pooled")


def test_length_mismatch_names_the_exemplar():
    exemplars = [Exemplar(("a", "b"), (0.0, 1.0)), Exemplar(("c", "d"), (1.0, 0.0))]
    with pytest.raises(ValueError, match="exemplar 1 "):
        simulation_score([[0, 1], [1, 0, 0]], exemplars)
    with pytest.raises(ValueError, match="3 tokens but 2 activations"):
        Exemplar(("a", "b", "c"), (0.0, 1.0))


@pytest.mark.parametrize("reply, expected", [
    ("1\t0\n2\t7\n3\t10", [0.0, 7.0, 10.0]),
    ("Here you go:\n```\n1. 0\n2:  \" cat\"  7\n3) 10\n```\n", [0.0, 7.0, 10.0]),  # lenient layout
    ("1\t0\n3\t10", None),  # index 2 missing
    ("1\t0\n2\t7\n2\t7\n3\t1", None),  # repeated index
    ("1\t0\n2\t11\n3\t1", None),  # out of range
    ("1\t0\n2\t7.5\n3\t1", None),  # not an integer
    ("1\t0\n2\n3\t1", None),  # value missing
    ("1\t0\n2\t7\n3\t1\n4\t0", None),  # index beyond the tokens
    (None, None),
])
def test_parse_reply(reply, expected):
    assert parse_reply(reply, 3) == expected


# --------------------------------------------------------------------------------------------------
# the OpenAI-compatible simulator


def test_end_to_end_score_through_server(server, tmp_path, key):
    sim = simulator(server, tmp_path, key, concurrency=4)
    predictions = sim.predict("mentions of cats", EXEMPLARS)
    assert predictions == [[0, 10, 0, 0], [0, 0, 0, 0, 10]]  # order kept under concurrency
    # clipped truth (0, 5, 0, .2, 0, 0, 0, 0, 3) against (0, 10, 0, 0, 0, 0, 0, 0, 10)
    expected = simulation_score(predictions, EXEMPLARS)
    assert 0.9 < expected < 1.0
    assert sim.score("mentions of cats", EXEMPLARS) == pytest.approx(expected)
    exact = [Exemplar(("my", " cat", "!"), (-1.0, 4.0, 0.0))]
    assert sim.score("mentions of cats", exact) == pytest.approx(1.0)
    assert sim.invalid_replies == 0
    first = server.requests[0]
    assert first["path"] == "/v1/chat/completions" and first["auth"] == f"Bearer {KEY}"
    assert first["body"]["model"] == MODEL and first["body"]["temperature"] == 0.0
    assert "mentions of cats" in first["body"]["messages"][-1]["content"]


def test_prompt_shows_tokens_unambiguously():
    user = simulation_messages("d", ["a\tb", " x", "\n"])[-1]["content"]
    assert [json.loads(t) for _, t in TOKEN_LINE.findall(user)] == ["a\tb", " x", "\n"]


def test_cache_makes_second_run_offline(server, tmp_path, key, monkeypatch):
    score = simulator(server, tmp_path, key).score("mentions of cats", EXEMPLARS)
    assert len(server.requests) == 2
    files = list((tmp_path / "cache").iterdir())
    assert len(files) == 2 and all(f.suffix == ".json" for f in files)
    assert not any(KEY in f.read_text() for f in files)
    monkeypatch.delenv(key)  # a fully cached run needs no key
    again = simulator(server, tmp_path, key)
    assert again.score("mentions of cats", EXEMPLARS) == score
    assert len(server.requests) == 2 and again.http_requests == 0 and again.cache_hits == 2
    with pytest.raises(SimulatorError, match=key):  # a new description is a cache miss
        again.score("mentions of dogs", EXEMPLARS)


def test_retries_rate_limit_then_succeeds(server, tmp_path, key):
    server.script = [429, 429]
    sim = simulator(server, tmp_path, key)
    assert sim.predict("cats", EXEMPLARS[:1]) == [[0, 10, 0, 0]]
    assert len(server.requests) == 3 and sim.http_requests == 3


def test_server_error_gives_up_after_max_retries(server, tmp_path, key):
    server.script = [500] * 10
    with pytest.raises(SimulatorError) as err:
        simulator(server, tmp_path, key, max_retries=2).predict("cats", EXEMPLARS[:1])
    assert server.url in str(err.value) and MODEL in str(err.value) and "500" in str(err.value)
    assert KEY not in str(err.value)
    assert len(server.requests) == 3
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())  # failures not cached


def test_client_error_is_not_retried(server, tmp_path, key):
    server.script = [401]
    with pytest.raises(SimulatorError, match="refused"):
        simulator(server, tmp_path, key).predict("cats", EXEMPLARS[:1])
    assert len(server.requests) == 1


def test_timeout_is_retried_then_fails(server, tmp_path, key):
    server.script = ["slow"] * 10
    with pytest.raises(SimulatorError, match="Timeout") as err:
        simulator(server, tmp_path, key, max_retries=1, timeout=0.2).predict("cats", EXEMPLARS[:1])
    assert server.url in str(err.value)
    assert len(server.requests) == 2


def test_invalid_replies_are_recorded_not_raised_and_asked_again(server, tmp_path, key):
    """Issue 19: invalid replies are counted and logged, never cached: once the server answers properly, the
    next call asks for them again and scores them."""
    server.script = ["garbage", "prose"]
    sim = simulator(server, tmp_path, key)
    assert sim.predict("cats", EXEMPLARS) == [None, None]
    assert sim.invalid_replies == 2 and len(server.requests) == 2
    assert not list((tmp_path / "cache").glob("*.json")) and len(list((tmp_path / "cache/invalid").glob("*.json"))) == 2
    assert sim.score("cats", EXEMPLARS) == pytest.approx(simulation_score([[0, 10, 0, 0], [0, 0, 0, 0, 10]], EXEMPLARS))
    assert sim.invalid_replies == 2 and len(server.requests) == 4  # asked again, answered this time
    assert sim.score("cats", EXEMPLARS) == sim.score("cats", EXEMPLARS) and len(server.requests) == 4  # cached now
    server.rules = {'" sat"': "prose"}  # one invalid among valid ones (whatever the arrival order): scored on
    # the valid ones only
    exemplars = [EXEMPLARS[0], Exemplar(("my", " cat", "!"), (-1.0, 4.0, 0.0))]
    assert sim.predict("felines", exemplars) == [None, [0, 10, 0]]
    assert sim.score("felines", exemplars) == pytest.approx(1.0)
    assert sim.invalid_replies == 4  # the " sat" exemplar, asked again by the second call
    # per call, the invalid replies behind its scores ("cats" on the " sat" exemplar is a valid cached reply)
    scores, invalid = sim.score_calls_counted([(["felines", "cats"], exemplars), (["felines"], exemplars[1:])])
    assert invalid == [1, 0]
    cats = simulation_score([[0, 10, 0, 0], [0, 10, 0]], exemplars)
    assert [list(x) for x in scores] == [[pytest.approx(1.0), pytest.approx(cats)], [pytest.approx(1.0)]]


def test_missing_api_key_is_a_clear_error(server, tmp_path, monkeypatch):
    monkeypatch.delenv("SIM_TEST_KEY", raising=False)
    with pytest.raises(SimulatorError, match="SIM_TEST_KEY is not set") as err:
        simulator(server, tmp_path, "SIM_TEST_KEY").predict("cats", EXEMPLARS[:1])
    assert server.requests == []
    # advice the config schema allows (api_key_env is a string): set the variable to any value for a keyless server
    assert "export SIM_TEST_KEY=EMPTY" in str(err.value) and "null" not in str(err.value)
    local = simulator(server, tmp_path, None)  # a local server that needs no key
    assert local.predict("cats", EXEMPLARS[:1]) == [[0, 10, 0, 0]]


# --------------------------------------------------------------------------------------------------
# concurrency


DESCRIPTIONS = ["mentions of cats", "mentions of dogs", "mentions of cats", "felines", "pets"]  # one repeated
MORE = EXEMPLARS + [Exemplar(("my", " cat", "!"), (-1.0, 4.0, 0.0)), Exemplar(("no", " pets"), (0.0, 1.0))]


def test_score_many_sends_one_concurrent_batch(server, tmp_path, key):
    import time

    server.delay = 0.1
    sim = simulator(server, tmp_path, key, concurrency=4)
    started = time.monotonic()
    scores = sim.score_many(DESCRIPTIONS, MORE)
    wall = time.monotonic() - started
    assert 1 < server.max_in_flight <= 4
    assert len(server.requests) == 16 and sim.cache_hits == 4  # 4 descriptions x 4 exemplars; the repeat is cached
    assert wall < 16 * 0.1 / 2
    one_by_one = simulator(server, tmp_path, key, concurrency=1)
    assert list(scores) == [one_by_one.score(d, MORE) for d in DESCRIPTIONS]  # same numbers, from the cache
    assert one_by_one.http_requests == 0


def test_predictions_and_cache_are_the_same_for_any_concurrency(server, tmp_path, key):
    server.rules = {'" dog"': "prose", '"no"': "garbage"}  # invalid replies: exemplars 1 and 3 of every description
    seen = {}
    for concurrency in (1, 8):
        sim = simulator(server, tmp_path / str(concurrency), key, concurrency=concurrency)
        scores = sim.score_many(DESCRIPTIONS, MORE)
        predictions = [sim.predict(d, MORE) for d in DESCRIPTIONS]
        folder = tmp_path / str(concurrency) / "cache"
        seen[concurrency] = (scores.tobytes(), predictions, sim.invalid_replies, sim.http_requests, sim.cache_hits,
                             {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*.json"))})
    assert seen[1] == seen[8]
    # 2 invalid of 4 exemplars, 10 times; score_many sends 16 (4 descriptions x 4 exemplars; the repeat shares the
    # replies), then the 5 predict calls send their 2 invalid ones again (not cached) and read 2 valid ones
    assert seen[8][2:5] == (20, 16 + 10, 4 + 10)


def test_retries_and_second_run_under_concurrency(server, tmp_path, key, monkeypatch):
    server.script = [429, 500, 429]
    server.retry_after = 0.05
    sim = simulator(server, tmp_path, key, concurrency=8)
    scores = sim.score_many(DESCRIPTIONS, MORE)
    assert sim.http_requests == len(server.requests) == 19 and sim.invalid_replies == 0
    monkeypatch.delenv(key)
    again = simulator(server, tmp_path, key, concurrency=8)
    assert again.score_many(DESCRIPTIONS, MORE).tobytes() == scores.tobytes()
    assert again.http_requests == 0 and again.cache_hits == 20 and len(server.requests) == 19


def test_failure_under_concurrency_names_server_and_model_never_the_key(server, tmp_path, key):
    server.rules = {"felines": "echo-key"}
    with pytest.raises(SimulatorError, match="simulator request to .* refused") as err:
        simulator(server, tmp_path, key, concurrency=4).score_many(DESCRIPTIONS, MORE)
    assert server.url in str(err.value) and MODEL in str(err.value) and KEY not in str(err.value)
    cached = list((tmp_path / "cache").iterdir())
    assert len(cached) == sum(e["status"] == 200 for e in server.requests) > 0


def test_simulator_from_config_wires_concurrency_and_device(tmp_path):
    from introspect.scoring.simulators import FinetunedSimulator, simulator_from_config

    sim = simulator_from_config({"backend": "openai", "model": MODEL, "concurrency": 32, "max_retries": 5,
                                 "timeout": 7.5, "correlation": "per_exemplar"}, str(tmp_path))
    assert isinstance(sim, OpenAISimulator) and sim.concurrency == 32 and sim.correlation == "per_exemplar"
    assert (sim.client.max_retries, sim.client.timeout) == (5, 7.5)
    default = simulator_from_config({"backend": "openai", "model": MODEL}, str(tmp_path))
    assert (default.concurrency, default.client.max_retries, default.client.timeout) == (8, 3, 30.0)
    assert default.correlation == "concatenated"
    with pytest.raises(ValueError, match="features.simulator.correlation: unknown definition 'mean'"):
        simulator_from_config({"backend": "openai", "model": MODEL, "correlation": "mean"}, str(tmp_path))
    with pytest.raises(ValueError, match="max_retries must be an integer >= 0"):
        simulator_from_config({"backend": "openai", "model": MODEL, "max_retries": -1}, str(tmp_path))
    tuned = simulator_from_config({"backend": "finetuned", "model": "some/folder", "batch_size": 4}, str(tmp_path),
                                  device="cuda:1")  # constructing loads nothing
    assert isinstance(tuned, FinetunedSimulator) and tuned.device == "cuda:1" and tuned.batch_size == 4


def test_score_calls_keeps_concurrency_in_flight_across_small_calls(server, tmp_path, key):
    """Scoring sends one call per eval item (one description x its check exemplars, a handful of requests):
    score_calls batches all the items' requests, so more than one call's worth are in flight at once, and the
    scores equal score_many call by call."""
    server.delay = 0.05
    sim = simulator(server, tmp_path, key, concurrency=8)
    calls = [([d], MORE[:2]) for d in DESCRIPTIONS[:3]] + [([DESCRIPTIONS[3]], MORE[2:])]
    scores = sim.score_calls(calls)
    assert server.max_in_flight > 2  # every call alone has 2 requests
    one_by_one = simulator(server, tmp_path, key, concurrency=1)
    assert [list(s) for s in scores] == [list(one_by_one.score_many(d, e)) for d, e in calls]
    assert one_by_one.http_requests == 0  # all from the cache


def test_only_the_finetuned_simulator_computes_on_compute_device(monkeypatch):
    """MiniLM and remote simulators run on the CPU (their jobs get no GPU), even under compute.device cuda."""
    import torch as torch_

    from introspect.scoring.simulators import simulator_device

    monkeypatch.setattr(torch_.cuda, "is_available", lambda: False)
    assert simulator_device({"backend": "embedding"}, "cuda") == "cpu"
    assert simulator_device({"backend": "openai"}, "cuda") == "cpu"
    with pytest.raises(RuntimeError, match="rule features_score: compute.device is 'cuda'"):
        simulator_device({"backend": "finetuned"}, "cuda", rule="features_score")
