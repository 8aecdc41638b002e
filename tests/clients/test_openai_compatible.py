"""The cached, retried chat-completions client shared by the OpenAI simulator and the LM judge."""

from __future__ import annotations

import json
import threading

import pytest

from introspect.clients.openai_compatible import CachedChatClient, ClientError, request_key

KEY = "sk-client-test-0123456789"


def client(server, tmp_path, monkeypatch, **kw) -> CachedChatClient:
    monkeypatch.setenv("CLIENT_KEY", KEY)
    return CachedChatClient("stub", cache_dir=tmp_path, base_url=server.url, api_key_env="CLIENT_KEY", role="judge",
                            **kw)


REQUEST = {"model": "stub", "temperature": 0.0, "messages": [{"role": "user", "content": '1\t"cat"'}]}


def test_reply_is_cached_atomically_and_counted(server, tmp_path, monkeypatch):
    c = client(server, tmp_path, monkeypatch)
    server.script = [503]
    body, path = c.reply(REQUEST)
    assert path == tmp_path / f"{request_key(REQUEST)}.json"
    assert json.loads(path.read_text())["body"] == body and "choices" in body
    assert (c.http_requests, c.cache_hits) == (2, 0)  # the 503 and its retry
    again = CachedChatClient("stub", cache_dir=tmp_path, base_url=server.url, api_key_env="UNSET_KEY_VARIABLE")
    assert again.reply(REQUEST) == (body, path)  # a cached run needs no key and sends nothing
    assert (again.http_requests, again.cache_hits, len(server.requests)) == (0, 1, 2)
    assert not list(tmp_path.glob(".tmp-*"))


def test_refusal_names_the_role_and_never_the_key(server, tmp_path, monkeypatch):
    c = client(server, tmp_path, monkeypatch)
    server.script = [401]
    with pytest.raises(ClientError, match="judge request to .* refused") as err:
        c.reply(REQUEST)
    assert KEY not in str(err.value) and c.http_requests == 1
    assert server.requests[0]["auth"] == f"Bearer {KEY}"


def test_giving_up_raises_the_callers_error_class(server, tmp_path, monkeypatch):
    class JudgeError(RuntimeError):
        pass

    c = client(server, tmp_path, monkeypatch, max_retries=1, error=JudgeError)
    server.script = [500, 500]
    with pytest.raises(JudgeError, match="gave up after 2 tries"):
        c.reply(REQUEST)
    assert c.http_requests == 2 and not list(tmp_path.glob("*.json"))


# --------------------------------------------------------------------------------------------------
# concurrent batches: CachedChatClient.replies


def batch(n: int, model: str = "stub") -> list[dict]:
    """n distinct requests; request i lists i + 1 tokens, so its reply has i + 1 lines."""
    return [{"model": model, "temperature": 0.0,
             "messages": [{"role": "user", "content": "\n".join(f'{j}\t"cat{i}"' for j in range(1, i + 2))}]}
            for i in range(n)]


def lines(body: str) -> int:
    return len(json.loads(body)["choices"][0]["message"]["content"].splitlines())


def cache_files(folder) -> dict[str, bytes]:
    """The cache files of `folder` (not the replies kept aside in its invalid/ folder)."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()} if folder.exists() else {}


def test_replies_keep_at_most_concurrency_requests_in_flight(server, tmp_path, monkeypatch):
    import time

    n, delay = 12, 0.15
    server.delay = delay
    c = client(server, tmp_path, monkeypatch, concurrency=4)
    started = time.monotonic()
    replies = c.replies(batch(n))
    wall = time.monotonic() - started
    assert 1 < server.max_in_flight <= 4
    assert wall < n * delay / 2  # one at a time it takes n * delay = 1.8 s; four at once about 0.45 s
    assert [lines(body) for body, _ in replies] == list(range(1, n + 1))  # in input order
    assert [path for _, path in replies] == [c.cache_path(r) for r in batch(n)]
    assert (c.http_requests, c.cache_hits, len(server.requests)) == (n, 0, n)


def test_concurrency_changes_nothing_but_the_wall_time(server, tmp_path, monkeypatch):
    requests = batch(6)
    requests = requests + requests[:3] + [requests[4]]  # identical requests in one batch are sent once
    server.rules = {'"cat2"': "prose", '"cat3"': "garbage"}  # invalid replies are cached like valid ones
    results = {}
    for concurrency in (1, 8):
        folder = tmp_path / f"c{concurrency}"
        c = CachedChatClient("stub", cache_dir=folder, base_url=server.url, api_key_env=None,
                             concurrency=concurrency)
        c.reply(requests[5])  # one cached before the batch: never sent again
        replies = c.replies(requests)
        results[concurrency] = ([(body, path.name) for body, path in replies], c.http_requests, c.cache_hits,
                                cache_files(folder))
    assert results[1] == results[8]
    _, http, hits, files = results[8]
    assert (http, hits, len(files)) == (6, 5, 6)  # 4 copies and 1 pre-cached reply are cache hits


def test_retries_are_counted_and_honoured_under_concurrency(server, tmp_path, monkeypatch):
    server.script = [429, 500, 429, 503]
    server.retry_after = 0.2
    c = client(server, tmp_path, monkeypatch, concurrency=4)
    replies = c.replies(batch(8))
    assert [lines(body) for body, _ in replies] == list(range(1, 9))
    assert c.http_requests == len(server.requests) == 12  # 8 requests and 4 retries
    arrivals: dict[str, list[float]] = {}
    for entry in server.requests:
        arrivals.setdefault(json.dumps(entry["body"], sort_keys=True), []).append(entry["time"])
    gaps = [b - a for times in arrivals.values() for a, b in zip(times, times[1:])]
    assert len(gaps) == 4 and min(gaps) >= 0.18  # each retry waited for the server's Retry-After
    assert len(cache_files(tmp_path)) == 8


def test_second_run_sends_nothing(server, tmp_path, monkeypatch):
    first = client(server, tmp_path, monkeypatch, concurrency=8).replies(batch(10))
    monkeypatch.delenv("CLIENT_KEY")  # a fully cached run needs no key
    again = CachedChatClient("stub", cache_dir=tmp_path, base_url=server.url, api_key_env="CLIENT_KEY",
                             concurrency=8)
    assert again.replies(batch(10)) == first
    assert (again.http_requests, again.cache_hits, len(server.requests)) == (0, 10, 10)


def test_a_failure_raises_once_the_replies_in_flight_are_cached(server, tmp_path, monkeypatch):
    n = 40
    server.delay = 0.05
    server.rules = {'"cat1"': 500}  # the second request fails on every try
    c = client(server, tmp_path, monkeypatch, concurrency=4, max_retries=1)
    with pytest.raises(ClientError) as err:
        c.replies(batch(n))
    text = str(err.value)
    assert server.url in text and "'stub'" in text and "500" in text and "gave up after 2 tries" in text
    answered = [e for e in server.requests if e.get("status") == 200]
    cached = cache_files(tmp_path)
    assert len(cached) == len(answered) > 0  # every reply that arrived is cached, whole
    assert all(json.loads(data)["body"] for data in cached.values())
    assert not list(tmp_path.glob(".tmp-*"))
    server.rules = {}
    rerun = client(server, tmp_path, monkeypatch, concurrency=4)
    assert [lines(body) for body, _ in rerun.replies(batch(n))] == list(range(1, n + 1))
    assert (rerun.http_requests, rerun.cache_hits) == (n - len(cached), len(cached))  # only the rest is sent


def test_the_key_never_appears_in_errors_under_concurrency(server, tmp_path, monkeypatch):
    import traceback

    server.rules = {"cat": "echo-key"}  # the server repeats the Authorization header in its error
    c = client(server, tmp_path, monkeypatch, concurrency=4)
    with pytest.raises(ClientError, match="refused") as err:
        c.replies(batch(6))
    assert any(KEY in e["auth"] for e in server.requests)
    report = "".join(traceback.format_exception(err.value))
    assert "***" in str(err.value) and KEY not in report and KEY not in repr(err.value)
    assert err.value.__cause__ is None and err.value.__suppress_context__


def test_concurrent_writers_of_one_cache_leave_whole_files(server, tmp_path, monkeypatch):
    server.delay = 0.02
    monkeypatch.setenv("CLIENT_KEY", KEY)
    clients = [CachedChatClient("stub", cache_dir=tmp_path, base_url=server.url, api_key_env="CLIENT_KEY",
                                concurrency=8) for _ in range(2)]
    results: list = [None, None]

    def run(k: int) -> None:
        results[k] = [body for body, _ in clients[k].replies(batch(16))]

    threads = [threading.Thread(target=run, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results[0] == results[1]
    files = list(tmp_path.iterdir())
    assert len(files) == 16 and all(json.loads(f.read_text())["body"] for f in files)  # no half-written file


@pytest.mark.parametrize("concurrency", [0, -1, 1.5, True])
def test_concurrency_must_be_a_positive_integer(tmp_path, concurrency):
    with pytest.raises(ValueError, match="concurrency must be an integer >= 1"):
        CachedChatClient("stub", cache_dir=tmp_path, concurrency=concurrency)


@pytest.mark.parametrize("option,value,message", [("max_retries", -1, "max_retries must be an integer >= 0"),
                                                  ("max_retries", 1.5, "max_retries must be an integer >= 0"),
                                                  ("timeout", 0, "timeout must be a number of seconds > 0"),
                                                  ("timeout", "30", "timeout must be a number of seconds > 0")])
def test_retries_and_timeout_are_checked(tmp_path, option, value, message):
    with pytest.raises(ValueError, match=message):
        CachedChatClient("stub", cache_dir=tmp_path, role="judge", **{option: value})


# --------------------------------------------------------------------------------------------------
# accepted replies only are cached (issue 19)


def two_lines(index: int, body: str) -> bool:
    """The caller's test in these tests: a reply is valid when it has two lines."""
    return lines(body) == 2 if "choices" in body else False


def test_a_rejected_reply_is_kept_aside_and_asked_again(server, tmp_path, monkeypatch):
    requests = batch(3)  # replies of 1, 2 and 3 lines: only the second passes `two_lines`
    c = client(server, tmp_path, monkeypatch, concurrency=2)
    replies = c.replies(requests, accept=two_lines)
    assert [path.parent.name for _, path in replies] == ["invalid", tmp_path.name, "invalid"]
    assert set(cache_files(tmp_path)) == {f"{request_key(requests[1])}.json"}
    assert {p.name for p in (tmp_path / "invalid").iterdir()} == {f"{request_key(requests[i])}.json" for i in (0, 2)}
    again = client(server, tmp_path, monkeypatch, concurrency=2)
    assert [body for body, _ in again.replies(requests, accept=two_lines)] == [body for body, _ in replies]
    assert (again.http_requests, again.cache_hits, len(server.requests)) == (2, 1, 5)  # the rejected two, again
    accepting = client(server, tmp_path, monkeypatch)  # a caller that accepts everything: now cached, aside removed
    accepting.replies(requests)
    assert accepting.http_requests == 2 and not list((tmp_path / "invalid").glob("*.json"))
    assert client(server, tmp_path, monkeypatch).replies(requests) == [(body, tmp_path / f"{request_key(r)}.json")
                                                                      for (body, _), r in zip(replies, requests)]


def test_a_cached_reply_the_caller_rejects_is_asked_again(server, tmp_path, monkeypatch):
    requests = batch(2)
    client(server, tmp_path, monkeypatch).replies(requests)  # cached without a test, as an older version did
    c = client(server, tmp_path, monkeypatch)
    c.replies(requests, accept=lambda i, body: i == 1)  # the first reply is not valid any more
    assert (c.http_requests, c.cache_hits) == (1, 1)
    assert (tmp_path / "invalid" / f"{request_key(requests[0])}.json").exists()
    assert (tmp_path / f"{request_key(requests[0])}.json").exists()  # the old file is left, but not trusted


def test_identical_requests_share_one_rejected_reply(server, tmp_path, monkeypatch):
    requests = batch(1) * 3
    c = client(server, tmp_path, monkeypatch, concurrency=3)
    asked = []
    replies = c.replies(requests, accept=lambda i, body: asked.append(i) or False)
    assert asked == [0] and c.http_requests == 1 and c.cache_hits == 2 and len({r for r in replies}) == 1


@pytest.mark.parametrize("action, phrase", [("echo-key", "refused"), ("echo-key-500", "gave up after 2 tries")])
def test_a_key_the_server_echoes_reaches_no_log_cache_or_traceback(server, tmp_path, monkeypatch, caplog, action,
                                                                   phrase):
    """401 and 500 bodies that repeat the key: not in the error, its traceback, any log record (the openai and
    httpx loggers at DEBUG included) or any file the client wrote."""
    import logging
    import traceback

    server.rules = {"cat": action}
    c = client(server, tmp_path / "cache", monkeypatch, max_retries=1)
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(ClientError, match=phrase) as err:
            c.reply(REQUEST)
    assert all(KEY in e["auth"] for e in server.requests) and len(server.requests) == (1 if action == "echo-key" else 2)
    assert "***" in str(err.value)
    assert KEY not in "".join(traceback.format_exception(err.value)) and KEY not in repr(err.value)
    assert caplog.records and KEY not in caplog.text
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert all(KEY.encode() not in p.read_bytes() for p in written)
