"""A chat-completions client for any OpenAI-compatible server, cached on disk and retried.

Used by the OpenAI simulator and the LM judge.

Caching: every request is stored as one JSON file ``<cache_dir>/<sha256>.json``, the hash taken over the
canonical JSON (sorted keys, no spaces) of the whole request body (``model``, ``messages``, ``temperature``
and, where the caller sets them, e.g. ``max_tokens``; the server URL is not part of it, so a cache carries
over between servers of the same model). The file holds that body and the raw HTTP response body, so
re-parsing is deterministic; it is written atomically (temporary file, then ``os.replace``), so a killed run
loses no finished request and a rerun makes no HTTP request for them. Only *accepted* replies are cached: a
caller may pass :meth:`CachedChatClient.replies` an ``accept(index, body)`` test (the judge: one rating; the
simulator: one value per token). A reply it rejects is written to ``<cache_dir>/invalid/<sha256>.json`` for
inspection, never read back, so a re-run asks the server again (a server that answered badly while
overloaded is asked anew once it is healthy); a cached reply it rejects (a cache written before the test
existed) is asked again too. Neither cache files nor logs hold the API key, which is read from
the environment variable ``api_key_env`` only when a request has to be sent (a fully cached run needs no
key). Retries are the OpenAI client's own (``max_retries`` after the first try; backoff from 0.5 s doubling to
8 s, or the server's ``Retry-After``) on 408/409/429, 5xx, timeouts and connection errors; other HTTP errors
(401, 404, ...) fail at once.
Every try is counted in ``http_requests``, every cached reply in ``cache_hits``. Both failures end in the
caller's error class (:class:`ClientError` by default) naming the server, the model and the last error, with
the key redacted.

Concurrency: :meth:`CachedChatClient.replies` answers a batch of requests with at most ``concurrency``
requests in flight (a thread pool; the OpenAI client is thread-safe). The replies come back in input order;
requests already cached are never sent, and identical requests of one batch are sent once (the later copies
count as cache hits and share the first one's reply, accepted or not). Every reply is stored the moment it
arrives, so when one request fails for good, the replies already in flight are still awaited and stored before
the error is raised (requests not yet started are dropped; a rerun sends only those). Replies, cache files and
counters are therefore the same whatever the concurrency, given a server that answers a request the same way
each time — except after a failure, when the requests that were already in flight beyond the failed one have
been sent and stored too (one at a time would have stopped before them).
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import logging
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.openai.com/v1"
DUMMY_API_KEY = "no-key-needed"
RETRY_STATUS = frozenset({408, 409, 429})  # and every 5xx
DEFAULT_CONCURRENCY = 8  # the config's default for features.simulator / features.explain.judge `concurrency`
DEFAULT_MAX_RETRIES = 3  # ... and `max_retries` (retries after the first try)
DEFAULT_TIMEOUT = 30.0  # ... and `timeout` (seconds per try)
INVALID_DIR = "invalid"  # <cache_dir>/invalid/: the last rejected reply of each request, never read back


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

    `role` names the caller in logs and errors ("simulator", "judge"); `error` is the exception class raised;
    `concurrency` is the most requests :meth:`replies` keeps in flight at once. Thread-safe: the counters and
    the client are guarded by a lock, so callers may also send from threads of their own.
    """

    def __init__(self, model: str, *, cache_dir: str | Path, base_url: str | None = None,
                 api_key_env: str | None = "OPENAI_API_KEY", max_retries: int = DEFAULT_MAX_RETRIES,
                 timeout: float = DEFAULT_TIMEOUT, concurrency: int = DEFAULT_CONCURRENCY, role: str = "chat",
                 error: type[Exception] = ClientError) -> None:
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ValueError(f"the {role} client's max_retries must be an integer >= 0 (retries after the first "
                             f"try), not {max_retries!r}")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
            raise ValueError(f"the {role} client's timeout must be a number of seconds > 0, not {timeout!r}")
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError(f"the {role} client's concurrency must be an integer >= 1 (requests in flight at "
                             f"once), not {concurrency!r}")
        self.model, self.base_url, self.api_key_env = model, base_url, api_key_env
        self.cache_dir = Path(cache_dir)
        self.max_retries, self.timeout, self.concurrency = max_retries, timeout, concurrency
        self.role, self.error = role, error
        self.http_requests = 0  # requests sent, retries included
        self.cache_hits = 0
        self._lock = threading.Lock()
        self._client: Any = None
        self._api_key: str | None = None

    @property
    def server(self) -> str:
        return self.base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL

    def cache_path(self, request: dict[str, Any]) -> Path:
        """The cache file of `request` (which may not exist yet)."""
        return self.cache_dir / f"{request_key(request)}.json"

    def invalid_path(self, request: dict[str, Any]) -> Path:
        """Where the last reply to `request` that the caller rejected is kept for inspection (never read back)."""
        return self.cache_dir / INVALID_DIR / f"{request_key(request)}.json"

    def reply(self, request: dict[str, Any], accept: Callable[[str], bool] | None = None) -> tuple[str, Path]:
        """The raw response body for `request`, from the cache or else from the server (then cached, if
        `accept(body)` holds or no test is given)."""
        return self.replies([request], None if accept is None else lambda _, body: accept(body))[0]

    def replies(self, requests: Sequence[dict[str, Any]],
                accept: Callable[[int, str], bool] | None = None) -> list[tuple[str, Path]]:
        """(raw response body, file holding it) of each request, in input order; at most `concurrency` in flight.

        `accept(i, body)` says whether the reply to request i is a valid answer (default: every reply is): only
        accepted replies are cached (the file is the cache file); a rejected one is kept in
        :meth:`invalid_path` (the file returned) and asked again by the next call. Cached requests are read, not
        sent; identical requests are sent once and share the reply. Raises the caller's error class when a
        request fails for good, after the replies in flight have arrived (and been cached when accepted).
        """
        paths = [self.cache_path(r) for r in requests]
        first: dict[Path, int] = {}  # the first index of each file: what `accept` is asked about
        bodies: dict[Path, tuple[str, Path]] = {}
        missing: dict[Path, dict[str, Any]] = {}  # the first request of each file to send, in input order
        hits = 0
        for i, (request, path) in enumerate(zip(requests, paths)):
            if path in first:
                hits += 1  # the first copy's reply, from the cache or sent once
                continue
            first[path] = i
            body = self._cached(path)
            if body is not None and accept is not None and not accept(i, body):
                log.info("%s: the cached reply %s is not a valid answer; asking again", self.role, path)
                body = None
            if body is None:
                missing[path] = request
            else:
                bodies[path] = (body, path)
                hits += 1
        with self._lock:
            self.cache_hits += hits
        if missing:
            self._openai_client()  # a missing key fails here, once, before anything is sent
            started = time.monotonic()
            keep = {path: (lambda body, i=first[path]: accept(i, body)) if accept is not None else None
                    for path in missing}
            bodies.update(self._fetch(missing, keep))
            log.debug("%s: %d of %d replies sent to %s (%d in flight at most) in %.1f s", self.role,
                      len(missing), len(requests), self.server, min(self.concurrency, len(missing)),
                      time.monotonic() - started)
        return [bodies[path] for path in paths]

    def _cached(self, path: Path) -> str | None:
        """The body stored in cache file `path`, or None when there is none (a damaged file counts as none)."""
        if not path.exists():
            return None
        try:
            body = json.loads(path.read_text(encoding="utf-8"))["body"]
            if isinstance(body, str):
                return body
        except (OSError, ValueError, LookupError, TypeError):
            pass
        log.warning("%s cache file %s is damaged; sending the request again", self.role, path)
        return None

    def _fetch(self, missing: dict[Path, dict[str, Any]],
               keep: dict[Path, Callable[[str], bool] | None]) -> dict[Path, tuple[str, Path]]:
        """Send every request of `missing` (cache file -> request), each stored as it arrives: in its cache file
        when `keep[path]` accepts it (or is None), else in the invalid folder."""
        if self.concurrency == 1 or len(missing) == 1:
            return {path: self._send_and_store(request, path, keep[path]) for path, request in missing.items()}
        out: dict[Path, tuple[str, Path]] = {}
        failures: dict[int, BaseException] = {}
        pool = concurrent.futures.ThreadPoolExecutor(min(self.concurrency, len(missing)),
                                                     thread_name_prefix=f"{self.role}-request")
        try:
            futures = {pool.submit(self._send_and_store, request, path, keep[path]): (n, path)
                       for n, (path, request) in enumerate(missing.items())}
            for future in concurrent.futures.as_completed(futures):
                if future.cancelled():  # dropped after a failure, never sent
                    continue
                n, path = futures[future]
                try:
                    out[path] = future.result()
                except BaseException as exc:  # re-raised below, once the replies in flight are cached
                    failures[n] = exc
                    for other in futures:  # drop what has not started; what is in flight finishes, cached
                        other.cancel()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        if failures:
            # The failure of the earliest request in input order, as one at a time would have raised first.
            raise failures[min(failures)]
        return out

    def _send_and_store(self, request: dict[str, Any], path: Path,
                        accept: Callable[[str], bool] | None = None) -> tuple[str, Path]:
        body = self._send(request)
        if accept is not None and not accept(body):
            path = self.invalid_path(request)  # kept for inspection, never read back: a re-run asks again
        else:
            self.invalid_path(request).unlink(missing_ok=True)  # an earlier rejected reply, now answered
        self._store(path, request, body)
        return body, path

    def _store(self, path: Path, request: dict[str, Any], body: str) -> None:
        """Write one cache file atomically: a temporary file in the same folder, then ``os.replace``."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump({"request": request, "body": body}, f, ensure_ascii=False)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

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
                            f"{self.server} (a local server started without a key, e.g. vLLM without --api-key, "
                            f"accepts any value: export {self.api_key_env}=EMPTY), or point the config's "
                            "api_key_env at the variable that holds the key")
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
                advice = (f"gave up after {tries} tries; check that the server is up, or raise the max_retries / "
                          "timeout settings")
            failure = self._failure(exc, advice)
        except openai.APIConnectionError as exc:  # timeouts included
            failure = self._failure(exc, f"gave up after {tries} tries; check that the server is up, or raise "
                                         "the max_retries / timeout settings")
        raise self.error(failure) from None  # the cause may echo the key: it is in the message, redacted

    def _failure(self, exc: Exception | None, advice: str) -> str:
        return self._redact(f"{self.role} request to {self.server} (model {self.model!r}) failed: "
                            f"{type(exc).__name__}: {exc}; {advice}")

    def _redact(self, text: str) -> str:
        return text.replace(self._api_key, "***") if self._api_key and self._api_key != DUMMY_API_KEY else text
