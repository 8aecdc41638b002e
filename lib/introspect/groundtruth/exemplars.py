"""Exemplars of a feature or a vector (paper section 2.2): top and random windows with true activations.

Exemplars are *windows*: the usable eval tokens of each corpus sequence cut into consecutive runs of
``width`` tokens (:func:`make_windows`). A feature's (or any vector's) exemplars are its ``n_top`` windows
with the highest maximum activation and ``n_random`` other windows drawn at random (seeded), each with the
true activation at every token: the SAE encoder's output for an SAE feature, ``a_v = <h, v>`` for a vector.
Exemplars are split in two halves (:func:`halves`: even ranks select a label, odd ranks check it).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import numpy as np
import polars as pl
import torch
from tqdm.auto import tqdm

from introspect.groundtruth.activations import usable_rows
from introspect.scoring.simulators import Exemplar

ActFn = Callable[[torch.Tensor], torch.Tensor]  # hidden (n, d) -> activations (n, n_items)


class FeaturesError(ValueError):
    """Feature data is missing or inconsistent; the message says which and what to do."""


@dataclasses.dataclass(frozen=True)
class ExemplarSettings:
    width: int = 32       # tokens per window
    n_top: int = 10       # top-activating windows per feature
    n_random: int = 4     # random windows per feature
    max_values: int = 200_000_000  # activations held per encoder pass (windows x width x items), ~800 MB


def make_windows(tokens: pl.DataFrame, width: int) -> pl.DataFrame:
    """Eval-split windows: (window_id, seq_id, rows = token-table row indices, tokens = their texts)."""
    rows = usable_rows(tokens, "eval")
    seq = tokens["seq_id"].to_numpy()[rows]
    texts = tokens["text"].to_list()
    out = {"window_id": [], "seq_id": [], "rows": [], "tokens": []}
    start = 0
    while start < len(rows):
        end = start
        while end < len(rows) and seq[end] == seq[start]:
            end += 1
        for w in range(start, end - width + 1, width):
            index = rows[w:w + width]
            out["window_id"].append(len(out["window_id"]))
            out["seq_id"].append(int(seq[start]))
            out["rows"].append(index.tolist())
            out["tokens"].append([texts[i] for i in index])
        start = end
    if not out["window_id"]:
        raise FeaturesError(f"the eval documents give no window of {width} tokens; lower "
                            "features.exemplars.width or raise the corpus size")
    return pl.DataFrame(out, schema={"window_id": pl.Int64, "seq_id": pl.Int64, "rows": pl.List(pl.Int64),
                                     "tokens": pl.List(pl.String)})


def window_rows(windows: pl.DataFrame) -> np.ndarray:
    return np.array(windows["rows"].to_list(), dtype=np.int64)


@torch.no_grad()
def exemplars(hidden: torch.Tensor, windows: pl.DataFrame, act_fn: ActFn, n_items: int,
              settings: ExemplarSettings, seed: int, progress: bool = True,
              device: str | torch.device | None = None) -> dict[str, np.ndarray]:
    """Top and random windows of every item, with per-token activations.

    Returns ``max_activation`` (n_items,), ``windows`` (n_items, n_top + n_random) window ids (top first, by
    decreasing activation) and ``activations`` (n_items, n_top + n_random, width) float32, all numpy (CPU).

    `act_fn` runs on `device` (default: where `hidden` is; `act_fn`'s weights must be there too): each pass
    (at most ``settings.max_values`` activations) moves its rows of `hidden` there as stored (float16) and
    casts them to float32 there; only the window maxima and the chosen windows' activations come back.
    """
    device = hidden.device if device is None else torch.device(device)
    index = window_rows(windows)
    n_windows, width = index.shape
    if n_windows < settings.n_top + settings.n_random:
        raise FeaturesError(f"{n_windows} eval windows cannot give {settings.n_top} top and {settings.n_random} "
                            "random exemplars; lower features.exemplars.n_top/n_random or add eval text")
    maxima = torch.empty((n_windows, n_items), dtype=torch.float32)
    per_pass = max(1, settings.max_values // (width * n_items))
    chunks = range(0, n_windows, per_pass)
    for start in tqdm(chunks, desc="window maxima", disable=not progress, leave=False):
        rows = torch.from_numpy(index[start:start + per_pass].reshape(-1))
        acts = act_fn(hidden[rows].to(device).float()).reshape(-1, width, n_items)
        maxima[start:start + per_pass] = acts.max(1).values.cpu()
    top_values, top = maxima.topk(settings.n_top, dim=0)  # (n_top, n_items)
    top = top.T.numpy()
    rng = np.random.default_rng(seed)
    chosen = np.empty((n_items, settings.n_top + settings.n_random), dtype=np.int64)
    chosen[:, : settings.n_top] = top
    for item in range(n_items):
        taken = set(top[item].tolist())
        extra = []
        while len(extra) < settings.n_random:
            w = int(rng.integers(n_windows))
            if w not in taken:
                taken.add(w)
                extra.append(w)
        chosen[item, settings.n_top:] = extra
    activations = np.zeros((n_items, chosen.shape[1], width), dtype=np.float32)
    for start in tqdm(chunks, desc="exemplar activations", disable=not progress, leave=False):
        stop = min(start + per_pass, n_windows)
        item_idx, slot_idx = np.nonzero((chosen >= start) & (chosen < stop))
        if not len(item_idx):
            continue
        rows = torch.from_numpy(index[start:stop].reshape(-1))
        acts = act_fn(hidden[rows].to(device).float()).reshape(stop - start, width, n_items)
        local = torch.from_numpy(chosen[item_idx, slot_idx] - start).to(acts.device)
        activations[item_idx, slot_idx] = acts[local, :, torch.from_numpy(item_idx).to(acts.device)].cpu().numpy()
    return {"max_activation": top_values[0].numpy(), "windows": chosen, "activations": activations}


def exemplar_frame(layer: int, items: Sequence[int], found: dict[str, np.ndarray], n_top: int) -> pl.DataFrame:
    n_slots = found["windows"].shape[1]
    kinds = ["top"] * n_top + ["random"] * (n_slots - n_top)
    n = len(items)
    return pl.DataFrame([
        pl.Series("layer", np.full(n, layer, dtype=np.int64)),
        pl.Series("feature", np.asarray(items, dtype=np.int64)),
        pl.Series("max_activation", found["max_activation"][:n].astype(np.float32)),
        _nested("windows", found["windows"].astype(np.int64), pl.List(pl.Int64)),
        pl.Series("kinds", [kinds] * n, dtype=pl.List(pl.String)),
        _nested("activations", found["activations"].astype(np.float32), pl.List(pl.List(pl.Float32)))])


def _nested(name: str, values: np.ndarray, dtype) -> pl.Series:
    """A List column from a numpy array without a round trip through Python objects."""
    if values.shape[0] == 0:
        return pl.Series(name, [], dtype=dtype)
    return pl.Series(name, values).cast(dtype)


def to_exemplars(window_ids: Sequence[int], activations: Sequence[Sequence[float]],
                 windows: pl.DataFrame) -> list[Exemplar]:
    texts = windows["tokens"]
    return [Exemplar(tuple(texts[int(w)]), tuple(a)) for w, a in zip(window_ids, activations)]


def halves(n_top: int, n_slots: int) -> tuple[list[int], list[int]]:
    """Slots that select a label (even ranks of top and of random) and slots that check it (odd ranks)."""
    select = [i for i in range(n_top) if i % 2 == 0] + [i for i in range(n_top, n_slots) if (i - n_top) % 2 == 0]
    return select, [i for i in range(n_slots) if i not in select]


def sae_exemplars(hidden: torch.Tensor, tokens: pl.DataFrame, sae, layer: int, settings: ExemplarSettings,
                  seed: int, progress: bool = True,
                  device: str | torch.device | None = None) -> tuple[pl.DataFrame, dict]:
    """Exemplars of every SAE feature of one layer; features that never fire on eval text are dropped.

    The SAE encodes on `device` (default: where `hidden` is); `sae` itself is not moved (a copy on `device` is
    used when it is elsewhere)."""
    windows = make_windows(tokens, settings.width)
    device = hidden.device if device is None else torch.device(device)
    encoder = sae.on(device) if hasattr(sae, "on") else sae
    found = exemplars(hidden, windows, encoder.encode, sae.n_features, settings, seed, progress, device=device)
    alive = np.flatnonzero(found["max_activation"] > 0)
    kept = {key: value[alive] for key, value in found.items()}
    frame = exemplar_frame(layer, alive.tolist(), kept, settings.n_top)
    stats = {"layer": layer, "features": sae.n_features, "kept": int(len(alive)),
             "dropped_no_activation": int(sae.n_features - len(alive)), "windows": windows.height,
             "window_width": settings.width}
    return frame, stats
