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

    `script` holds one action per request, consumed in order ("ok" once it is empty): "ok", an HTTP status
    (int), "slow" (sleeps past the client's timeout), "garbage" (200, not JSON), "prose" (a well-formed
    completion whose content does not parse).
    """

    daemon_threads = True
    block_on_close = False

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.requests: list[dict] = []
        self.script: list = []
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
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.server.lock:
            self.server.requests.append({"path": self.path, "auth": self.headers.get("Authorization"),
                                         "body": request})
            action = self.server.script.pop(0) if self.server.script else "ok"
        if self.path != "/v1/chat/completions":
            return self._send(404, b'{"error": {"message": "no such route"}}')
        if isinstance(action, int):
            return self._send(action, json.dumps({"error": {"message": f"stub status {action}"}}).encode())
        if action == "slow":
            time.sleep(1.0)
        if action == "garbage":
            return self._send(200, b"<html>this is not JSON")
        tokens = [json.loads(t) for _, t in TOKEN_LINE.findall(request["messages"][-1]["content"])]
        content = "\n".join(f"{i}\t{10 if 'cat' in t.lower() else 0}" for i, t in enumerate(tokens, 1))
        if action == "prose":
            content = "The feature is most active on the word cat."
        completion = {"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": request["model"],
                      "choices": [{"index": 0, "finish_reason": "stop",
                                   "message": {"role": "assistant", "content": content}}],
                      "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
        self._send(200, json.dumps(completion).encode())
