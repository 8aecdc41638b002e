"""Simulation scoring of feature descriptions (paper section 2.2, equation 2).

A simulator reads a description E of a feature ("mentions of cats") and a context x, and predicts the
feature's activation at every token of x. The description's score (:func:`simulation_score`, true
activations clipped at 0) is one of two definitions, the simulator's `correlation` (config
``features.simulator.correlation``):

- ``concatenated`` (default): one Pearson correlation over the concatenated tokens of all scored exemplars,
  as the authors' evaluation code computes it (it produced the paper's numbers);
- ``per_exemplar``: equation 2 as printed, E_x[corr_t(a, a_hat)]: a Pearson correlation per exemplar,
  averaged over the exemplars where it is defined (neither side constant; a random window where the feature
  never fires has no correlation).

The score is signed; the authors report its absolute value in their tables, which is the caller's choice.

:class:`OpenAISimulator` prompts any OpenAI-compatible chat-completions server "all at once": one request
per (description, exemplar). The prompt (:func:`simulation_messages`, written for this project) lists
the exemplar's tokens one per line, numbered from 1, each written as a JSON string so that spaces and
line breaks are visible::

    1	"The"
    2	" cat"

and asks for exactly one line per token, ``index<TAB>value``, ``value`` an integer 0 (inactive) to 10
(maximally active). Parsing (:func:`parse_reply`) is strict on values and lenient on layout: blank
lines, code fences and lines that do not start with a digit (a preamble) are ignored; any whitespace may
separate the fields, an echoed token between index and value is ignored (the value is the last field),
and an index may end in ``.``, ``:`` or ``)``. The reply is *invalid* when any index 1..n is missing or
repeated, an index is out of range, or a value is not an integer in 0..10; so is a body that is not a
chat completion. An invalid reply gives ``None`` for that exemplar, is counted in
``OpenAISimulator.invalid_replies`` and logged, never raised; :meth:`Simulator.score` uses only the valid
exemplars and returns nan when none is valid. Invalid replies are not cached: a re-run asks the server again
(:mod:`introspect.clients.openai_compatible`), and :meth:`Simulator.score_calls_counted` says how many replies
behind each score were invalid.

Requests go through :mod:`introspect.clients.openai_compatible` (cache, retries, key redaction), at most
``concurrency`` in flight at once: :meth:`OpenAISimulator.predict` sends one description's exemplars as one
batch and :meth:`OpenAISimulator.score_many` all (description, exemplar) pairs of its call; predictions,
scores, cache and invalid-reply counts are the same as one request at a time.
"""

from __future__ import annotations

import abc
import dataclasses
import json
import logging
import math
import threading
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from introspect.names import CORRELATIONS, check_correlation
from introspect.clients.openai_compatible import (
    DEFAULT_CONCURRENCY,
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT,
    CachedChatClient,
    ClientError,
    completion_content,
)

log = logging.getLogger(__name__)


MAX_VALUE = 10

SYSTEM_PROMPT = f"""\
You predict how strongly one feature of a language model's internal activations fires on each token \
of a text, given a description of what the feature responds to.
Rate every token on an integer scale from 0 (not active) to {MAX_VALUE} (maximally active). Most tokens \
of a typical text are rated 0; rate a token above 0 only if the description applies to it in its context.
The tokens are listed one per line as `index<TAB>token`, each token written as a JSON string so that \
spaces and line breaks are visible.
Answer with exactly one line per token, in the listed order, of the form `index<TAB>value`, where value \
is an integer from 0 to {MAX_VALUE}. Write nothing else."""


class SimulatorError(ClientError):
    """No predictions can be had (server down or refusing, key unset); the message says what to do."""


@dataclasses.dataclass(frozen=True)
class Exemplar:
    """One context: its decoded tokens and the feature's true activation at each of them."""

    tokens: tuple[str, ...]
    activations: tuple[float, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "tokens", tuple(str(t) for t in self.tokens))
        object.__setattr__(self, "activations", tuple(float(a) for a in self.activations))
        if len(self.tokens) != len(self.activations):
            raise ValueError(f"Exemplar has {len(self.tokens)} tokens but {len(self.activations)} activations; "
                             "give one activation per token")


def _pearson(pred: np.ndarray, true: np.ndarray) -> float:
    """Pearson correlation of two equal-length vectors; nan when either is constant or shorter than 2."""
    if pred.size < 2 or np.ptp(pred) == 0 or np.ptp(true) == 0:
        return math.nan
    return float(np.corrcoef(pred, true)[0, 1])


def simulation_score(predicted: Sequence[Sequence[float]], exemplars: Sequence[Exemplar],
                     correlation: str = "concatenated") -> float:
    """Correlation of predicted and true (clipped at 0) activations (module docstring):

    - ``concatenated``: one Pearson correlation over all tokens concatenated; nan when either side is constant
      (or there are fewer than two tokens);
    - ``per_exemplar``: the mean of each exemplar's Pearson correlation over the exemplars where it is defined;
      nan when it is defined for none.
    """
    check_correlation(correlation)
    if len(predicted) != len(exemplars):
        raise ValueError(f"{len(predicted)} predictions for {len(exemplars)} exemplars; give one per exemplar")
    for i, (pred, ex) in enumerate(zip(predicted, exemplars)):
        if len(pred) != len(ex.tokens):
            raise ValueError(f"prediction for exemplar {i} has {len(pred)} values but the exemplar has "
                             f"{len(ex.tokens)} tokens; predict one value per token")
    if correlation == "per_exemplar":
        values = [_pearson(np.asarray(p, dtype=np.float64), np.maximum(np.asarray(ex.activations, np.float64), 0.0))
                  for p, ex in zip(predicted, exemplars)]
        defined = [v for v in values if not math.isnan(v)]
        return float(np.mean(defined)) if defined else math.nan
    pred = np.array([v for p in predicted for v in p], dtype=np.float64)
    true = np.maximum(np.array([a for ex in exemplars for a in ex.activations], dtype=np.float64), 0.0)
    return _pearson(pred, true)


class Simulator(abc.ABC):
    """Maps (description, exemplars) to predicted per-token activations; ``None`` marks an invalid prediction.

    `correlation` (an instance attribute set by the backends' constructors; default ``concatenated``) is the
    score's definition (module docstring)."""

    correlation: str = "concatenated"

    @abc.abstractmethod
    def predict(self, description: str, exemplars: Sequence[Exemplar]) -> list[list[float] | None]:
        """One list of per-token predictions per exemplar, or None where the simulator gave no valid answer."""

    def score(self, description: str, exemplars: Sequence[Exemplar]) -> float:
        """Simulation score of `description` over the exemplars with a valid prediction (nan if none)."""
        return score_valid(self.predict(description, exemplars), exemplars, self.correlation)

    def score_many(self, descriptions: Sequence[str], exemplars: Sequence[Exemplar]) -> "np.ndarray":
        """Score of each description on the same exemplars (backends may do this faster than one by one)."""
        return np.array([self.score(d, exemplars) for d in descriptions], dtype=np.float64)

    def score_calls(self, calls: Sequence[tuple[Sequence[str], Sequence[Exemplar]]]) -> list["np.ndarray"]:
        """:meth:`score_many` of each (descriptions, exemplars) call; a remote backend sends the requests of all
        the calls as one concurrent batch, so that `concurrency` is reached even when each call is small."""
        return self.score_calls_counted(calls)[0]

    def score_calls_counted(self, calls: Sequence[tuple[Sequence[str], Sequence[Exemplar]]]
                            ) -> tuple[list["np.ndarray"], list[int]]:
        """:meth:`score_calls`, and for each call the number of invalid replies behind its scores (one per
        description and exemplar that got no valid prediction; 0 for a backend that always predicts)."""
        return [self.score_many(d, e) for d, e in calls], [0] * len(calls)


def score_valid(predicted: Sequence[Sequence[float] | None], exemplars: Sequence[Exemplar],
                correlation: str = "concatenated") -> float:
    """:func:`simulation_score` over the exemplars whose prediction is not None (nan if none is)."""
    pairs = [(p, ex) for p, ex in zip(predicted, exemplars) if p is not None]
    if not pairs:
        return math.nan
    return simulation_score([p for p, _ in pairs], [ex for _, ex in pairs], correlation)


def simulation_messages(description: str, tokens: Sequence[str]) -> list[dict[str, str]]:
    """The chat messages asking for one 0-10 value per token of one exemplar."""
    listing = "\n".join(f"{i}\t{json.dumps(tok, ensure_ascii=False)}" for i, tok in enumerate(tokens, 1))
    user = (f"Feature description: {description.strip()}\n\nTokens:\n{listing}\n\n"
            f"Reply with {len(tokens)} lines of the form `index<TAB>value`.")
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def parse_reply(text: str | None, n_tokens: int) -> list[float] | None:
    """The n_tokens values of a reply in the ``index<TAB>value`` format, or None if the reply is invalid."""
    if text is None:
        return None
    values: dict[int, int] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or not line[0].isdigit():  # blank line, code fence, preamble
            continue
        fields = line.split()
        index, value = fields[0].rstrip(".:)"), fields[-1]
        if len(fields) < 2 or not (index.isdigit() and value.isdigit()):
            return None
        i, v = int(index), int(value)
        if not 1 <= i <= n_tokens or i in values or v > MAX_VALUE:
            return None
        values[i] = v
    if len(values) != n_tokens:
        return None
    return [float(values[i]) for i in range(1, n_tokens + 1)]


class OpenAISimulator(Simulator):
    """All-at-once simulator on an OpenAI-compatible chat-completions server, cached on disk (module docstring).

    `concurrency` is the most requests in flight at once; it changes the wall time only, never the result.
    """

    def __init__(self, model: str, *, cache_dir: str | Path, base_url: str | None = None,
                 api_key_env: str | None = "OPENAI_API_KEY", max_retries: int = DEFAULT_MAX_RETRIES,
                 timeout: float = DEFAULT_TIMEOUT, concurrency: int = DEFAULT_CONCURRENCY, temperature: float = 0.0,
                 correlation: str = "concatenated") -> None:
        self.model, self.temperature = model, temperature
        self.correlation = check_correlation(correlation)
        self.client = CachedChatClient(model, cache_dir=cache_dir, base_url=base_url, api_key_env=api_key_env,
                                       max_retries=max_retries, timeout=timeout, concurrency=concurrency,
                                       role="simulator", error=SimulatorError)
        self.invalid_replies = 0  # exemplars whose reply could not be parsed (such replies are never cached)
        self._lock = threading.Lock()

    @property
    def server(self) -> str:
        return self.client.server

    @property
    def concurrency(self) -> int:
        return self.client.concurrency

    @property
    def http_requests(self) -> int:
        """Requests sent, retries included."""
        return self.client.http_requests

    @property
    def cache_hits(self) -> int:
        return self.client.cache_hits

    def request(self, description: str, exemplar: Exemplar) -> dict[str, Any]:
        """The chat-completion request body for one (description, exemplar)."""
        return {"model": self.model, "messages": simulation_messages(description, exemplar.tokens),
                "temperature": self.temperature}

    def predict(self, description: str, exemplars: Sequence[Exemplar]) -> list[list[float] | None]:
        return self._predict_calls([([description], exemplars)])[0][0]

    def score_many(self, descriptions: Sequence[str], exemplars: Sequence[Exemplar]) -> np.ndarray:
        """Score of each description on the same exemplars: every (description, exemplar) request of the call
        in one concurrent batch; the same scores as :meth:`score` one description at a time."""
        return self.score_calls([(descriptions, exemplars)])[0]

    def score_calls_counted(self, calls: Sequence[tuple[Sequence[str], Sequence[Exemplar]]]
                            ) -> tuple[list[np.ndarray], list[int]]:
        """:meth:`score_many` of every call, all their requests in one concurrent batch (same scores), and each
        call's number of invalid replies."""
        predictions = self._predict_calls(calls)
        scores = [np.array([score_valid(p, exemplars, self.correlation) for p in per_description], dtype=np.float64)
                  for per_description, (_, exemplars) in zip(predictions, calls)]
        invalid = [sum(p is None for per_exemplar in per_description for p in per_exemplar)
                   for per_description in predictions]
        return scores, invalid

    def _predict_calls(self, calls: Sequence[tuple[Sequence[str], Sequence[Exemplar]]]
                       ) -> list[list[list[list[float] | None]]]:
        """Per call, per description, per exemplar, the parsed prediction (None if invalid), from one batch."""
        keys = [(c, d, i) for c, (descriptions, exemplars) in enumerate(calls)
                for d in range(len(descriptions)) for i in range(len(exemplars))]
        sizes = [len(calls[c][1][i].tokens) for c, _, i in keys]

        def valid(n: int, body: str) -> bool:  # an invalid reply is not cached: a re-run asks again
            return parse_reply(completion_content(body), sizes[n]) is not None

        replies = self.client.replies([self.request(calls[c][0][d], calls[c][1][i]) for c, d, i in keys], valid)
        out = [[[] for _ in descriptions] for descriptions, _ in calls]
        for (c, d, i), size, (body, path) in zip(keys, sizes, replies):
            values = parse_reply(completion_content(body), size)
            if values is None:  # counted and logged in input order, as one request at a time would
                with self._lock:
                    self.invalid_replies += 1
                log.warning("invalid simulator reply for exemplar %d of %r (kept in %s; not cached, a re-run asks "
                            "again)", i, calls[c][0][d], path)
            out[c][d].append(values)
        return out


FINETUNED_SIMULATOR_ID = "Transluce/features_explain_llama3.1_8b_simulator"


class FinetunedSimulator(Simulator):
    """Transluce's fine-tuned simulator (the paper's backend): a causal LM reading a 0-10 value per token.

    The prompt is the text ``"## Neuron Description: {E}\\n\\n ## Input: "`` (E the description, not
    stripped) tokenized with the tokenizer's special tokens (its BOS, if it adds one), followed by the
    exemplar's token ids. The prediction at a token is the expected value ``sum_i i * p_i`` of the softmax
    over the next-token logits of the strings ``"0"`` .. ``"10"`` at that token's position, so it lies in
    [0, 10].

    :meth:`predict` takes :class:`Exemplar` objects, which hold decoded token strings, not ids: each
    token string is tokenized on its own (``add_special_tokens=False``) and the sub-token ids are
    concatenated; the prediction for an exemplar token is read at the position of its *last* sub-token.
    With a byte-level BPE tokenizer of the target's family (Llama-3.1 for the released checkpoint) a
    decoded token usually re-tokenizes to itself; a token string that tokenizes to nothing (empty) is a
    ValueError. Callers holding the target's ids can use :meth:`predict_ids`, which reads every position.

    The model and tokenizer are loaded with ``transformers`` on first use (constructing is cheap), unless
    given as `model` / `tokenizer` (then used as they are: `device` and `dtype` apply to loading only).
    ``model_dir_or_id`` is a local folder or a hub id such as ``FINETUNED_SIMULATOR_ID``. Exemplars of
    one description are run `batch_size` at a time in one forward pass, right-padded with an attention
    mask; the description prefix is recomputed for each (a shared KV cache would be faster, not
    different). `max_tokens`, when set, is the most tokens an
    exemplar may have: a longer one is a ValueError, not truncated.
    """

    PROMPT = "## Neuron Description: {description}\n\n ## Input: "

    def __init__(self, model_dir_or_id: str, *, device: str = "cpu",
                 dtype: str = "bfloat16", batch_size: int = 8, max_tokens: int | None = None,
                 model: Any = None, tokenizer: Any = None, correlation: str = "concatenated") -> None:
        self.correlation = check_correlation(correlation)
        if batch_size < 1 or (max_tokens is not None and max_tokens < 1):
            raise ValueError("FinetunedSimulator needs batch_size >= 1 and max_tokens >= 1 (or None)")
        if (model is None) != (tokenizer is None):
            raise ValueError("give both `model` and `tokenizer`, or neither (then both are loaded from "
                             f"{model_dir_or_id!r})")
        self.model_dir_or_id, self.device, self.dtype = str(model_dir_or_id), device, dtype
        self.batch_size, self.max_tokens = batch_size, max_tokens
        self._model, self._tokenizer = model, tokenizer
        self._value_ids: list[int] | None = None
        self._lock = threading.Lock()

    def prompt(self, description: str) -> str:
        """The text that precedes the exemplar's tokens."""
        return self.PROMPT.format(description=description)

    @property
    def tokenizer(self) -> Any:
        self._load()
        return self._tokenizer

    @property
    def model(self) -> Any:
        self._load()
        return self._model

    def _load(self) -> None:
        with self._lock:
            if self._model is None:
                import torch
                import transformers

                dtype = getattr(torch, self.dtype) if isinstance(self.dtype, str) else self.dtype
                if not isinstance(dtype, torch.dtype):
                    raise ValueError(f"dtype {self.dtype!r} is not a torch dtype; use e.g. bfloat16 or float32")
                try:
                    tokenizer = transformers.AutoTokenizer.from_pretrained(self.model_dir_or_id)
                    model = transformers.AutoModelForCausalLM.from_pretrained(self.model_dir_or_id, dtype=dtype)
                except (OSError, ValueError, ImportError) as exc:
                    raise SimulatorError(
                        f"cannot load the simulator model {self.model_dir_or_id!r} ({type(exc).__name__}: {exc}); "
                        f"download it with `huggingface-cli download {FINETUNED_SIMULATOR_ID} --local-dir DIR` "
                        "(on a machine with network access) and point the simulator's model setting at DIR, "
                        "or use the `embedding` simulator backend offline") from exc
                self._model, self._tokenizer = model.to(self.device), tokenizer
            if self._value_ids is None:
                self._model.eval()
                # The first id of each of "0".."10": "10" is one token in Llama-3 tokenizers, but a
                # digit-splitting tokenizer (e.g. SmolLM2's) gives "1","0", and then "10" shares "1"'s logit.
                self._value_ids = [self._tokenizer(str(v), add_special_tokens=False)["input_ids"][0]
                                   for v in range(MAX_VALUE + 1)]

    def _pad_id(self) -> int:
        tok = self._tokenizer
        for pad in (tok.pad_token_id, tok.eos_token_id):
            if isinstance(pad, int):
                return pad
        return 0

    def encode(self, description: str, tokens: Sequence[str]) -> tuple[list[int], list[int]]:
        """Prompt ids for one exemplar's token strings, and the position read for each token (its last sub-token)."""
        self._check_length(len(tokens))
        ids = list(self.tokenizer(self.prompt(description))["input_ids"])
        positions = []
        for i, tok in enumerate(tokens):
            sub = self.tokenizer(tok, add_special_tokens=False)["input_ids"]
            if not sub:
                raise ValueError(f"exemplar token {i} ({tok!r}) tokenizes to no ids; drop empty tokens first")
            ids.extend(sub)
            positions.append(len(ids) - 1)
        return ids, positions

    def _check_length(self, n: int) -> None:
        if self.max_tokens is not None and n > self.max_tokens:
            raise ValueError(f"an exemplar has {n} tokens, more than max_tokens={self.max_tokens}; "
                             "shorten the exemplars or raise max_tokens")

    def predict(self, description: str, exemplars: Sequence[Exemplar]) -> list[list[float] | None]:
        encoded = [self.encode(description, ex.tokens) for ex in exemplars]
        return list(self._run(encoded))

    def predict_ids(self, description: str, token_ids: Sequence[Sequence[int]]) -> list[list[float]]:
        """Predictions for exemplars given as token ids of the simulator's tokenizer family; one per id."""
        prefix = list(self.tokenizer(self.prompt(description))["input_ids"])
        encoded = []
        for ids in token_ids:
            self._check_length(len(ids))
            encoded.append((prefix + [int(t) for t in ids], list(range(len(prefix), len(prefix) + len(ids)))))
        return self._run(encoded)

    def _run(self, encoded: Sequence[tuple[list[int], list[int]]]) -> list[list[float]]:
        """Expected 0-10 values at the given positions, `batch_size` sequences per forward pass."""
        import torch

        self._load()
        model = self._model
        device = next(model.parameters()).device
        values = torch.arange(MAX_VALUE + 1, dtype=torch.float32)
        value_ids = torch.tensor(self._value_ids, device=device)
        out: list[list[float]] = [[] for _ in encoded]
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]))  # similar lengths together
        with torch.no_grad():
            for start in range(0, len(order), self.batch_size):
                batch = [i for i in order[start:start + self.batch_size] if encoded[i][1]]
                if not batch:
                    continue
                width = max(len(encoded[i][0]) for i in batch)
                input_ids = torch.full((len(batch), width), self._pad_id(), dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                for row, i in enumerate(batch):
                    ids = encoded[i][0]
                    input_ids[row, :len(ids)] = torch.tensor(ids, dtype=torch.long)
                    mask[row, :len(ids)] = 1
                logits = model(input_ids=input_ids.to(device), attention_mask=mask.to(device), use_cache=False).logits
                for row, i in enumerate(batch):
                    picked = logits[row, encoded[i][1]][:, value_ids].float().cpu()
                    out[i] = (picked.softmax(-1) @ values).tolist()
        return out


def simulator_device(settings: dict, device: str, rule: str | None = None) -> str:
    """Where a simulator backend computes: the fine-tuned model on compute.device; MiniLM and remote servers on
    the CPU (their jobs ask the scheduler for no GPU, so a cuda setting must not be resolved for them)."""
    from introspect.models.loading import resolve_device

    return resolve_device(device, rule=rule, gpus="features") if settings.get("backend") == "finetuned" else "cpu"


def simulator_from_config(settings: dict, cache_dir: str, device: str = "cpu"):
    """The simulator of features.simulator: embedding (offline), openai or finetuned, scoring with the
    definition of its `correlation` key (default concatenated).

    `device` (already resolved, e.g. by :func:`introspect.models.loading.resolve_device`) is where the
    finetuned simulator is loaded and run; the other backends ignore it.
    """
    backend = settings["backend"]
    correlation = settings.get("correlation", CORRELATIONS[0])
    if backend == "embedding":
        from introspect.scoring.embedding import EmbeddingSimulator

        return EmbeddingSimulator(correlation=correlation)
    if backend == "openai":
        return OpenAISimulator(settings["model"], cache_dir=cache_dir, base_url=settings.get("base_url"),
                               api_key_env=settings.get("api_key_env", "OPENAI_API_KEY"),
                               concurrency=settings.get("concurrency", DEFAULT_CONCURRENCY),
                               max_retries=settings.get("max_retries", DEFAULT_MAX_RETRIES),
                               timeout=settings.get("timeout", DEFAULT_TIMEOUT), correlation=correlation)
    if backend == "finetuned":
        return FinetunedSimulator(settings["model"], device=device,
                                  dtype=settings.get("dtype", "bfloat16"),
                                  batch_size=settings.get("batch_size", 8), correlation=correlation)
    raise ValueError(f"features.simulator.backend: unknown backend {backend!r}; use embedding, openai or finetuned")
