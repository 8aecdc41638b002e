"""A chat-completions client for any OpenAI-compatible server, cached on disk and retried.

Used by the OpenAI simulator and the LM judge. Caching: every request is stored as one JSON file ``<cache_dir>/<sha256>.json``, the hash taken over the
canonical JSON (sorted keys, no spaces) of the request body ``{"model", "messages", "temperature"}``
(the server URL is not part of it, so a cache carries over between servers of the same model). The file
holds that body and the raw HTTP response body, valid or not, so re-parsing is deterministic; it is
written atomically (temporary file, then ``os.replace``), so a killed run loses no finished request and a
rerun makes no HTTP request for them. Neither cache files nor logs hold the API key, which is read from
the environment variable ``api_key_env`` only when a request has to be sent (a fully cached run needs no
key). Retries are this module's own: up to ``max_retries`` after the first try, with exponential backoff
from ``retry_delay`` seconds, on 408/409/429, 5xx, timeouts and connection errors; other HTTP errors
(401, 404, ...) fail at once. Both end in :class:`SimulatorError` naming the server, the model and the
last error.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

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
