"""The LM judge of feature descriptions (paper appendix A.2).

:class:`EmbeddingJudge` (offline: MiniLM cosine of predicted and gold description, mapped onto the judge's
five-step scale with thresholds calibrated on the A.2 prompt's own five examples) and :class:`OpenAIJudge`
(the A.2 prompt on any OpenAI-compatible server, through the cached client of
:mod:`introspect.clients.openai_compatible`, `concurrency` requests in flight at once, replies of at most
JUDGE_MAX_TOKENS tokens). Both return (rating - 1) / 4 in {0, .25, .5, .75, 1}, or None for an invalid reply
(anything but one rating: :func:`parse_rating`), which is counted and not cached, so a re-run asks again.
:func:`judge_from_config` builds the judge of ``features.explain.judge``.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Sequence

import numpy as np

from introspect.clients.openai_compatible import (
    DEFAULT_CONCURRENCY,
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT,
    CachedChatClient,
    completion_content,
)
from introspect.scoring.simulators import SimulatorError

log = logging.getLogger(__name__)


#: The LM judge prompt of the paper's appendix A.2 ("A.2 Metric details: LM judge"), word for word and line for
#: line: its blank lines and its last line are kept; what the PDF's text layer adds is not (a one-space indent
#: on every wrapped line, a code fence and a blank line where the listing breaks across pages, before
#: "Correct rating: 5"). The placeholders are the paper's, predicted_label and expected_label.
JUDGE_PROMPT = """Does this feature description accurately describe when this feature activates?
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
Correct rating: 5

Now rate the following pair:

Predicted: {predicted_label}
Expected: {expected_label}

Return a number from 1 to 5 and nothing else."""


#: Most tokens the judge may answer with: the prompt asks for one number, so a reply that needs more is not one.
JUDGE_MAX_TOKENS = 10


#: The A.2 prompt's own examples, (predicted, expected, rating): the embedding judge is calibrated on them.
JUDGE_EXAMPLES = (
    ("mentions of cooking recipes", "references to financial transactions", 1),
    ("mentions of dogs and cats", "references to farm animals", 2),
    ("mentions of sunny weather and rain", "references to climate conditions", 3),
    ("mentions of jazz musicians and concerts", "references to music", 4),
    ("mentions of Shakespeare's plays", "references to works by Shakespeare", 5),
)


#: A valid judge reply: one rating 1-5, optionally followed by a period, with any whitespace around it.
VALID_RATING = re.compile(r"\s*([1-5])\.?\s*")


def parse_rating(text: str | None) -> int | None:
    """The judge's rating, or None when the reply is not exactly one rating.

    Accepted: the reply, stripped of surrounding whitespace (spaces, tabs, line breaks), is one digit 1-5,
    optionally followed by one period: "3", " 3.", "3\\n". Everything else is invalid, e.g. "Rating: 3",
    "3/5", "4 out of 5", "3.5", "**3**" or an empty reply: the prompt asks for "a number from 1 to 5 and nothing
    else", and guessing which digit of a longer reply is the rating is how "Rating: 2 (on a scale from 1 to 5)"
    came to read as 5."""
    if not text:
        return None
    found = VALID_RATING.fullmatch(text)
    return int(found.group(1)) if found else None


def rating_score(rating: int | None) -> float | None:
    return None if rating is None else (rating - 1) / 4


class EmbeddingJudge:
    """Offline judge: MiniLM cosine of the two descriptions, thresholded into ratings 1-5.

    The four thresholds sit halfway between the cosines of consecutive A.2 examples (sorted by rating), so the
    judge rates the prompt's own examples as the prompt says; when those cosines are not increasing, the
    thresholds are spread evenly between the lowest and highest example cosine.
    """

    def __init__(self, embedder=None):
        from introspect.scoring.embedding import MiniLM

        self.embedder = embedder or MiniLM()
        cos = self.cosines([p for p, _, _ in JUDGE_EXAMPLES], [e for _, e, _ in JUDGE_EXAMPLES])
        if np.all(np.diff(cos) > 0):
            self.thresholds = (cos[:-1] + cos[1:]) / 2
        else:
            self.thresholds = np.linspace(cos.min(), cos.max(), 6)[1:-1]
        log.info("embedding judge thresholds %s (A.2 example cosines %s)", np.round(self.thresholds, 3),
                 np.round(cos, 3))

    def cosines(self, predicted: Sequence[str], expected: Sequence[str]) -> np.ndarray:
        a = self.embedder.sentences([p or "" for p in predicted])
        b = self.embedder.sentences([e or "" for e in expected])
        return (a * b).sum(1)

    def ratings(self, predicted: Sequence[str], expected: Sequence[str]) -> list[int]:
        return [1 + int(np.searchsorted(self.thresholds, c, side="right")) for c in self.cosines(predicted, expected)]

    def scores(self, predicted: Sequence[str], expected: Sequence[str]) -> list[float | None]:
        return [rating_score(r) for r in self.ratings(predicted, expected)]


class OpenAIJudge:
    """The A.2 prompt on an OpenAI-compatible server, through the cached, retried chat client.

    :meth:`scores` sends all its pairs as one batch, `concurrency` requests in flight at once (identical pairs
    once, cached pairs never); the scores and the count of invalid replies are the same as one at a time.
    """

    def __init__(self, model: str = "gpt-4.1-mini", *, cache_dir, base_url: str | None = None,
                 api_key_env: str | None = "OPENAI_API_KEY", concurrency: int = DEFAULT_CONCURRENCY,
                 max_retries: int = DEFAULT_MAX_RETRIES, timeout: float = DEFAULT_TIMEOUT):
        self.model = model
        self._client = CachedChatClient(model, cache_dir=cache_dir, base_url=base_url, api_key_env=api_key_env,
                                        concurrency=concurrency, max_retries=max_retries, timeout=timeout,
                                        role="judge", error=SimulatorError)
        self.invalid_replies = 0
        self._lock = threading.Lock()

    def request(self, predicted: str, expected: str) -> dict:
        """The chat-completion request body rating one (predicted, expected) pair: the A.2 prompt, greedy, at
        most JUDGE_MAX_TOKENS tokens."""
        prompt = JUDGE_PROMPT.format(predicted_label=predicted, expected_label=expected)
        return {"model": self.model, "temperature": 0.0, "max_tokens": JUDGE_MAX_TOKENS,
                "messages": [{"role": "user", "content": prompt}]}

    def scores(self, predicted: Sequence[str], expected: Sequence[str]) -> list[float | None]:
        """(rating - 1) / 4 of each pair, None for an invalid reply (:func:`parse_rating`; counted in
        `invalid_replies`). Invalid replies are not cached: the next call asks the server again."""
        if len(predicted) != len(expected):
            raise ValueError(f"{len(predicted)} predicted descriptions for {len(expected)} expected ones; "
                             "give one expected description per predicted one")
        replies = self._client.replies([self.request(p, e) for p, e in zip(predicted, expected)],
                                       accept=lambda _, body: parse_rating(completion_content(body)) is not None)
        out = []
        for body, path in replies:  # in input order, so the warnings are too
            rating = parse_rating(completion_content(body))
            if rating is None:
                with self._lock:
                    self.invalid_replies += 1
                log.warning("invalid judge reply %r (kept in %s; not cached, a re-run asks again)",
                            (completion_content(body) or body)[:80], path)
            out.append(rating_score(rating))
        return out

    @property
    def concurrency(self) -> int:
        return self._client.concurrency

    @property
    def http_requests(self) -> int:
        return self._client.http_requests

    @property
    def cache_hits(self) -> int:
        return self._client.cache_hits


def judge_from_config(settings: dict, cache_dir: str):
    """The judge of features.explain.judge: embedding (offline) or openai (any OpenAI-compatible server)."""
    backend = settings.get("backend", "embedding")
    if backend == "openai":
        return OpenAIJudge(settings.get("model", "gpt-4.1-mini"), cache_dir=cache_dir,
                           base_url=settings.get("base_url"),
                           api_key_env=settings.get("api_key_env", "OPENAI_API_KEY"),
                           concurrency=settings.get("concurrency", DEFAULT_CONCURRENCY),
                           max_retries=settings.get("max_retries", DEFAULT_MAX_RETRIES),
                           timeout=settings.get("timeout", DEFAULT_TIMEOUT))
    if backend == "embedding":
        return EmbeddingJudge()
    raise ValueError(f"features.explain.judge.backend: unknown backend {backend!r}; use embedding or openai")
