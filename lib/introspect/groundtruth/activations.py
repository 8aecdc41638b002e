"""Tokenised corpus and the residual-stream activation cache of a target model (paper section 2.2).

The corpus is cut into sequences of at most ``seq_len`` tokens (a document may give several); a tokenizer
that adds a BOS token gets it at the start of every sequence. One row per content token goes into the
tokens table; its ``text`` is the span of the document from the end of the previous token to the end of
this one, so that the texts of a sequence's tokens concatenate to the document text.

Position 0 of every model input (the BOS token, or the first content token where there is none) draws
attention-sink activations orders of magnitude larger than the rest; rows with ``position == 0`` are kept
in the tables (for the text) but excluded from SAE training, exemplars and eval vectors (``usable_rows``).

The cache of one layer is a safetensors file holding ``hidden`` (n_tokens, d) float16 — the output of
decoder layer ``layer`` (0-based) for every row of the tokens table, in the same order — plus ``token_ids``,
``seq_ids`` and ``positions`` (int64) so that a cache can be checked against its tokens table.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import polars as pl
import torch
from tqdm.auto import tqdm

from introspect.schemas import FEATURE_TOKENS
from introspect.tensorfiles import save_tensors

log = logging.getLogger(__name__)


TOKENS_SCHEMA = FEATURE_TOKENS  # the tokens table as introspect.schemas documents it


class ActivationError(ValueError):
    """A cache does not fit its tokens table or its model; the message says which and what to do."""


def bos_prefix(tokenizer) -> list[int]:
    """[bos] when the tokenizer adds a BOS token to plain text by default, else []."""
    ids = tokenizer("a").input_ids
    bos = tokenizer.bos_token_id
    return [bos] if bos is not None and ids and ids[0] == bos else []


def tokenize_corpus(corpus: pl.DataFrame, tokenizer, seq_len: int, max_tokens: int | None = None) -> pl.DataFrame:
    """One row per content token of every sequence, documents in corpus order, cut at `max_tokens` tokens."""
    prefix = bos_prefix(tokenizer)
    width = seq_len - len(prefix)
    if width < 2:
        raise ActivationError(f"features.activations.seq_len={seq_len} leaves no room for text; use >= 8")
    columns: dict[str, list] = {name: [] for name in TOKENS_SCHEMA}
    seq_id = total = 0
    for doc_id, split, text in corpus.select("doc_id", "split", "text").iter_rows():
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = enc.input_ids, enc.offset_mapping
        for start in range(0, len(ids), width):
            piece = ids[start:start + width]
            if len(piece) < 2:
                continue
            prev_end = offsets[start][0]
            for i, token_id in enumerate(piece):
                end = max(offsets[start + i][1], prev_end)
                columns["seq_id"].append(seq_id)
                columns["doc_id"].append(doc_id)
                columns["split"].append(split)
                columns["position"].append(len(prefix) + i)
                columns["token_id"].append(int(token_id))
                columns["text"].append(text[prev_end:end])
                prev_end = end
            seq_id += 1
            total += len(piece)
            if max_tokens and total >= max_tokens:
                return pl.DataFrame(columns, schema=TOKENS_SCHEMA)
    return pl.DataFrame(columns, schema=TOKENS_SCHEMA)


def sequences(tokens: pl.DataFrame, prefix: Sequence[int]) -> list[list[int]]:
    """Model inputs of the tokens table, in seq_id order (prefix + content ids)."""
    grouped = tokens.group_by("seq_id", maintain_order=True).agg(pl.col("token_id"))
    return [list(prefix) + list(ids) for ids in grouped["token_id"].to_list()]


def usable_rows(tokens: pl.DataFrame, split: str | None = None) -> np.ndarray:
    """Row indices of tokens that may be used (not position 0), optionally of one corpus split."""
    mask = tokens["position"].to_numpy() > 0
    if split is not None:
        mask &= (tokens["split"] == split).to_numpy()
    return np.flatnonzero(mask)


def decoder_layers(model) -> torch.nn.ModuleList:
    """The decoder blocks of a causal LM (Llama, Gemma-3, Qwen, ... keep them at model.model.layers)."""
    inner = getattr(model, "model", model)
    inner = getattr(inner, "language_model", inner)
    layers = getattr(inner, "layers", None)
    if layers is None:
        raise ActivationError(f"cannot find the decoder layers of {type(model).__name__}; expected model.layers")
    return layers


def pad_id(tokenizer) -> int:
    """The id that pads a batch (the tokenizer's pad token, else 0: padded positions are masked anyway)."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0


def right_pad(seqs: Sequence[Sequence[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids and attention mask of a batch of sequences."""
    width = max(len(s) for s in seqs)
    batch = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        batch[i, : len(s)] = torch.tensor(list(s))
        mask[i, : len(s)] = 1
    return batch, mask


class _Stop(Exception):
    pass


INPUT_LAYER = -1  # layer_outputs: the input embedding, where a continuous token is written


@torch.no_grad()
def iter_layer_outputs(model, seqs: Sequence[Sequence[int]], layers: Sequence[int], batch_size: int = 16,
                       pad_id: int = 0, progress: bool = True, desc: str = "activations"):
    """Residual stream after each of `layers`, a batch at a time: yields (sequence indices, {layer: (B, width,
    d) float32 on the CPU}); row j of a batch is sequence ``index[j]``, right-padded.

    Layer :data:`INPUT_LAYER` (-1) is the input embedding: what the embedding module outputs, the vectors a
    continuous token is written over (Gemma's sqrt(d) scale included). One batched forward per `batch_size`
    sequences (sorted by length to limit padding), stopped right after the deepest requested layer: the
    blocks above it are never run.
    """
    blocks = decoder_layers(model)
    wanted = sorted(set(int(l) for l in layers))
    bad = [l for l in wanted if not INPUT_LAYER <= l < len(blocks)]
    if bad:
        raise ActivationError(f"layer(s) {bad} asked for, but the model has layers 0..{len(blocks) - 1} (and "
                              f"{INPUT_LAYER} = the input embedding); fix the layers in the config "
                              "(features.targets.<target>.layers)")
    saved: dict[int, torch.Tensor] = {}

    def hook(index):
        def save(_module, _inputs, output):
            saved[index] = (output[0] if isinstance(output, tuple) else output).float().cpu()
            if index == wanted[-1]:
                raise _Stop
        return save

    modules = {l: model.get_input_embeddings() if l == INPUT_LAYER else blocks[l] for l in wanted}
    handles = [modules[l].register_forward_hook(hook(l)) for l in wanted]
    order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
    device = next(model.parameters()).device
    try:
        bar = tqdm(range(0, len(order), batch_size), desc=desc, unit="batch", disable=not progress)
        for start in bar:
            index = order[start:start + batch_size]
            batch, mask = right_pad([seqs[i] for i in index], pad_id)
            saved.clear()
            try:
                model(input_ids=batch.to(device), attention_mask=mask.to(device), use_cache=False)
            except _Stop:
                pass
            yield index, dict(saved)
    finally:
        for handle in handles:
            handle.remove()


def layer_outputs(model, seqs: Sequence[Sequence[int]], layers: Sequence[int], batch_size: int = 16,
                  pad_id: int = 0, progress: bool = True, desc: str = "activations") -> dict[int, list[torch.Tensor]]:
    """Residual stream after each of `layers` for every sequence: {layer: [(len_i, d) float32]} (see
    :func:`iter_layer_outputs`)."""
    out: dict[int, list] = {int(l): [None] * len(seqs) for l in layers}
    for index, hidden in iter_layer_outputs(model, seqs, layers, batch_size, pad_id, progress, desc):
        for l in out:
            for row, i in enumerate(index):
                out[l][i] = hidden[l][row, : len(seqs[i])]
    return out


def cache_layer(model, tokenizer, tokens: pl.DataFrame, layer: int, batch_size: int = 16,
                progress: bool = True) -> dict[str, torch.Tensor]:
    """The cache tensors of one layer for every row of `tokens` (see the module docstring).

    Each batch's states go straight into one preallocated float16 (n_tokens, d) tensor: the job holds the
    layer's cache once, in float16, and one batch in float32."""
    prefix = bos_prefix(tokenizer)
    seqs = sequences(tokens, prefix)
    starts = np.concatenate([[0], np.cumsum([len(s) - len(prefix) for s in seqs])])
    if starts[-1] != tokens.height:
        raise ActivationError(f"the tokens table's {tokens.height} rows give {starts[-1]} sequence tokens")
    started = time.perf_counter()
    content = None
    for index, hidden in iter_layer_outputs(model, seqs, [layer], batch_size, pad_id(tokenizer), progress,
                                            desc=f"layer {layer}"):
        states = hidden[layer]
        if content is None:
            content = torch.empty((tokens.height, states.shape[-1]), dtype=torch.float16)
        for row, i in enumerate(index):
            content[starts[i]:starts[i + 1]] = states[row, len(prefix):len(seqs[i])].to(torch.float16)
    seconds = time.perf_counter() - started
    n = sum(len(s) for s in seqs)
    log.info("layer %d: %d sequences, %d tokens in %.1f s (%.0f tokens/s)", layer, len(seqs), n, seconds,
             n / max(seconds, 1e-9))
    if content is None:
        raise ActivationError(f"layer {layer}: the tokens table is empty; nothing to cache")
    if not torch.isfinite(content).all():
        raise ActivationError(f"layer {layer}: activations overflow float16 (|h| > 65504); the cache is float16, "
                              "so pick another layer, or run the model in bfloat16/float32 and clip (not supported)")
    return {"hidden": content,
            "token_ids": torch.tensor(tokens["token_id"].to_numpy(), dtype=torch.int64),
            "seq_ids": torch.tensor(tokens["seq_id"].to_numpy(), dtype=torch.int64),
            "positions": torch.tensor(tokens["position"].to_numpy(), dtype=torch.int64)}


def save_cache(tensors: dict[str, torch.Tensor], path: str | Path, layer: int) -> Path:
    return save_tensors(tensors, path, {"layer": str(layer)})


def load_cache(path: str | Path, tokens: pl.DataFrame | None = None) -> torch.Tensor:
    """The float16 hidden states of a cache file, checked against the tokens table when given."""
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    hidden = tensors["hidden"]
    if tokens is not None:
        ids = torch.tensor(tokens["token_id"].to_numpy(), dtype=torch.int64)
        if hidden.shape[0] != tokens.height or not torch.equal(tensors["token_ids"], ids):
            raise ActivationError(f"{path} does not match the tokens table ({hidden.shape[0]} vs {tokens.height} "
                                  "rows, or other token ids); delete it and re-run the activations rule")
    return hidden
