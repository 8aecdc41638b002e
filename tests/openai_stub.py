"""A local OpenAI-compatible chat-completions server for tests of the simulator and judge clients."""

from __future__ import annotations

import http.server
import json
import re
import threading
import time

TOKEN_LINE = re.compile(r'^(\d+)\t(".*")$', re.M)


class StubServer(http.server.ThreadingHTTPServer):
    """OpenAI-compatible /v1/chat/completions; rates tokens containing "cat" 10, others 0.

    `script` holds one action per request, consumed in order of arrival ("ok" once it is empty): "ok", an HTTP
    status (int), "slow" (sleeps past the client's timeout), "garbage" (200, not JSON), "prose" (a well-formed
    completion whose content does not parse), "verbose-rating" (a judge reply with more than the rating:
    "Rating: 2 (on a scale from 1 to 5)"), "echo-key" (401 whose error message repeats the Authorization
    header, as some servers do). A judge prompt (no token listing) is answered with the bare rating the A.2
    prompt asks for: 5 when its predicted description mentions cats, else 2. `rules` maps a substring of the
    last message to the action of every request holding it (checked before `script`, not consumed), so a test
    under concurrency can pick which request fails. Every request sleeps `delay` seconds before answering; error answers carry ``Retry-After:
    retry_after`` when it is set. `in_flight` / `max_in_flight` count requests being answered at once;
    each entry of `requests` gets the arrival time and the status answered.
    """

    daemon_threads = True
    block_on_close = False
    request_queue_size = 128  # many concurrent clients connect at once

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.requests: list[dict] = []
        self.script: list = []
        self.rules: dict[str, object] = {}
        self.delay = 0.0
        self.retry_after: float | None = None
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def handle_error(self, request, client_address) -> None:  # a client gone after a timeout: not news
        pass


class Handler(http.server.BaseHTTPRequestHandler):
    server: StubServer

    def log_message(self, *args) -> None:
        pass

    def _send(self, status: int, body: bytes) -> None:
        self.entry["status"] = status
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if status >= 400 and self.server.retry_after is not None:
            self.send_header("Retry-After", str(self.server.retry_after))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        srv = self.server
        with srv.lock:
            self.entry = {"path": self.path, "auth": self.headers.get("Authorization"), "body": request,
                          "time": time.monotonic()}
            srv.requests.append(self.entry)
            last = request.get("messages", [{}])[-1].get("content", "")
            ruled = [action for text, action in srv.rules.items() if text in last]
            action = ruled[0] if ruled else srv.script.pop(0) if srv.script else "ok"
            srv.in_flight += 1
            srv.max_in_flight = max(srv.max_in_flight, srv.in_flight)
        try:
            if srv.delay:
                time.sleep(srv.delay)
            self._answer(request, action)
        finally:
            with srv.lock:
                srv.in_flight -= 1

    def _answer(self, request: dict, action) -> None:
        if self.path != "/v1/chat/completions":
            return self._send(404, b'{"error": {"message": "no such route"}}')
        if isinstance(action, int):
            return self._send(action, json.dumps({"error": {"message": f"stub status {action}"}}).encode())
        if action in ("echo-key", "echo-key-500"):  # a server that repeats the Authorization header in its error
            message = f"invalid credentials: {self.headers.get('Authorization')}"
            status = 401 if action == "echo-key" else 500
            return self._send(status, json.dumps({"error": {"message": message}}).encode())
        if action == "slow":
            time.sleep(1.0)
        if action == "garbage":
            return self._send(200, b"<html>this is not JSON")
        tokens = [json.loads(t) for _, t in TOKEN_LINE.findall(request["messages"][-1]["content"])]
        content = "\n".join(f"{i}\t{10 if 'cat' in t.lower() else 0}" for i, t in enumerate(tokens, 1))
        if action == "prose":
            content = "The feature is most active on the word cat."
        elif action == "verbose-rating":
            content = "Rating: 2 (on a scale from 1 to 5)"
        elif not tokens:  # a judge prompt: rate 5 when the predicted description mentions cats, else 2
            predicted = re.findall(r"^Predicted: (.*)$", request["messages"][-1]["content"], re.M)
            content = str(5 if predicted and "cat" in predicted[-1].lower() else 2)
        completion = {"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": request["model"],
                      "choices": [{"index": 0, "finish_reason": "stop",
                                   "message": {"role": "assistant", "content": content}}],
                      "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
        self._send(200, json.dumps(completion).encode())


def running_stub():
    """A StubServer answering on 127.0.0.1 from a daemon thread until the generator is closed (fixtures)."""
    srv = StubServer()
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
