"""The cached, retried chat-completions client shared by the OpenAI simulator and the LM judge."""

from __future__ import annotations

import json
import threading

import pytest
from openai_stub import StubServer

from introspect.clients.openai_compatible import CachedChatClient, ClientError, request_key

KEY = "sk-client-test-0123456789"


@pytest.fixture
def server():
    srv = StubServer()
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()


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
