"""A chat-completions client for any OpenAI-compatible server, cached on disk and retried.

Used by the OpenAI simulator and the LM judge.

Caching: every request is stored as one JSON file ``<cache_dir>/<sha256>.json``, the hash taken over the
canonical JSON (sorted keys, no spaces) of the request body ``{"model", "messages", "temperature"}``
(the server URL is not part of it, so a cache carries over between servers of the same model). The file
holds that body and the raw HTTP response body, valid or not, so re-parsing is deterministic; it is
written atomically (temporary file, then ``os.replace``), so a killed run loses no finished request and a
rerun makes no HTTP request for them. Neither cache files nor logs hold the API key, which is read from
the environment variable ``api_key_env`` only when a request has to be sent (a fully cached run needs no
key). Retries are the OpenAI client's own (``max_retries`` after the first try; backoff from 0.5 s doubling to
8 s, or the server's ``Retry-After``) on 408/409/429, 5xx, timeouts and connection errors; other HTTP errors
(401, 404, ...) fail at once.
Every try is counted in ``http_requests``, every cached reply in ``cache_hits``. Both failures end in the
caller's error class (:class:`ClientError` by default) naming the server, the model and the last error, with
the key redacted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.openai.com/v1"
DUMMY_API_KEY = "no-key-needed"
RETRY_STATUS = frozenset({408, 409, 429})  # and every 5xx


def completion_content(body: str) -> str | None:
    """The first choice's message content of a chat-completion response body, or None if it has none."""
    try:
        content = json.loads(body)["choices"][0]["message"]["content"]
    except (ValueError, LookupError, TypeError):
        return None
    return content if isinstance(content, str) else None


def request_key(request: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of a request body: the name of its cache file."""
    canonical = json.dumps(request, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class ClientError(RuntimeError):
    """A request that failed for good (refused, or out of retries); the message names server and model."""


class CachedChatClient:
    """Chat completions on one model of an OpenAI-compatible server, cached on disk and retried (module docstring).

    `role` names the caller in logs and errors ("simulator", "judge"); `error` is the exception class raised.
    Thread-safe: the counters and the client are guarded by a lock, so callers may send concurrently.
    """

    def __init__(self, model: str, *, cache_dir: str | Path, base_url: str | None = None,
                 api_key_env: str | None = "OPENAI_API_KEY", max_retries: int = 3, timeout: float = 30.0,
                 role: str = "chat", error: type[Exception] = ClientError) -> None:
        if max_retries < 0 or timeout <= 0:
            raise ValueError(f"the {role} client needs max_retries >= 0 and timeout > 0")
        self.model, self.base_url, self.api_key_env = model, base_url, api_key_env
        self.cache_dir = Path(cache_dir)
        self.max_retries, self.timeout = max_retries, timeout
        self.role, self.error = role, error
        self.http_requests = 0  # requests sent, retries included
        self.cache_hits = 0
        self._lock = threading.Lock()
        self._client: Any = None
        self._api_key: str | None = None

    @property
    def server(self) -> str:
        return self.base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL

    def reply(self, request: dict[str, Any]) -> tuple[str, Path]:
        """The raw response body for `request`, from the cache or else from the server (then cached)."""
        path = self.cache_dir / f"{request_key(request)}.json"
        if path.exists():
            try:
                body = json.loads(path.read_text(encoding="utf-8"))["body"]
                if isinstance(body, str):
                    with self._lock:
                        self.cache_hits += 1
                    return body, path
            except (OSError, ValueError, LookupError, TypeError):
                pass
            log.warning("%s cache file %s is damaged; sending the request again", self.role, path)
        body = self._send(request)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.cache_dir, prefix=".tmp-", suffix=".json")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump({"request": request, "body": body}, f, ensure_ascii=False)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return body, path

    def _openai_client(self) -> Any:
        with self._lock:
            if self._client is None:
                import openai

                if self.api_key_env is None:
                    key = DUMMY_API_KEY
                else:
                    key = os.environ.get(self.api_key_env, "")
                    if not key:
                        raise self.error(
                            f"environment variable {self.api_key_env} is not set: export it with the API key for "
                            f"{self.server}, or set api_key_env to null for a local server that needs no key")
                self._api_key = key
                # The client's own retries (max_retries, backoff from 0.5 s, Retry-After honoured); the hooks
                # count every try and log every failed answer.
                http = openai.DefaultHttpxClient(event_hooks={"request": [self._count_try],
                                                              "response": [self._log_status]})
                self._client = openai.OpenAI(base_url=self.base_url, api_key=key, max_retries=self.max_retries,
                                             timeout=self.timeout, http_client=http)
            return self._client

    def _count_try(self, request: Any) -> None:
        with self._lock:
            self.http_requests += 1

    def _log_status(self, response: Any) -> None:
        if response.status_code >= 400:
            log.warning("%s request to %s answered HTTP %d", self.role, self.server, response.status_code)

    def _send(self, request: dict[str, Any]) -> str:
        """POST one chat completion (the client retries); the raw response body."""
        import openai

        client = self._openai_client()
        tries = self.max_retries + 1
        try:
            return client.chat.completions.with_raw_response.create(**request).text
        except openai.APIStatusError as exc:
            if exc.status_code not in RETRY_STATUS and exc.status_code < 500:
                advice = "the server refused the request; check the model name, the URL and the key"
            else:
                advice = f"gave up after {tries} tries; check that the server is up, or raise max_retries / timeout"
            failure = self._failure(exc, advice)
        except openai.APIConnectionError as exc:  # timeouts included
            failure = self._failure(exc, f"gave up after {tries} tries; check that the server is up, or raise "
                                         "max_retries / timeout")
        raise self.error(failure) from None  # the cause may echo the key: it is in the message, redacted

    def _failure(self, exc: Exception | None, advice: str) -> str:
        return self._redact(f"{self.role} request to {self.server} (model {self.model!r}) failed: "
                            f"{type(exc).__name__}: {exc}; {advice}")

    def _redact(self, text: str) -> str:
        return text.replace(self._api_key, "***") if self._api_key and self._api_key != DUMMY_API_KEY else text
