"""Activation similarity between an explainer model and the target (paper appendix B.2, Table 5, Figure 6).

Both models read the same eval text; each target token is paired with the explainer token that holds its
last character (tokenizers differ: Gemma-3 and SmolLM2 split text differently). The explainer's layer is
the target's at the same relative depth (:func:`relative_layer`), or its input embedding for a projection
aligned there (``align: input``).

The comparison goes through the map the explainer reads the target's vectors with, Pi_l (target -> explainer,
no bias, ``nn.Linear`` layout (d_E, d_M)): the identity when the hidden sizes match and no projection is
configured; for Table 5 the pre-trained projection (least squares on the corpus's train sequences; the paper's
Llama-3.1-70B row); for Figure 6 each run's own trained Pi_l, read from its checkpoint. No map is fitted on the
text it is measured on.

- Dot-product similarity: the mean cosine of ``Pi_l h^M`` and ``h^E`` over aligned tokens (the cosine, so
  that models with different residual norms compare; the paper reports it as a percentage).
- SAE activation-pattern similarity: for a feature v of the target, the Pearson correlation over the tokens
  of each of its top exemplar windows of ``<h^E, Pi_l v>`` and ``<h^M, v>``, averaged over windows; reported
  as mean and standard deviation over features.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import polars as pl
import torch

from introspect.groundtruth.activations import bos_prefix, layer_outputs, pad_id


def relative_layer(layer: int, n_target: int, n_explainer: int) -> int:
    """The explainer layer at the same relative depth as target layer `layer` (0-based, after the block)."""
    return int(min(n_explainer - 1, max(0, round((layer + 1) * n_explainer / n_target) - 1)))


def align(target_ends: Sequence[int], explainer_offsets: Sequence[tuple[int, int]]) -> np.ndarray:
    """For each target token (given by the end of its characters) the explainer token holding its last
    character, or -1 when none does."""
    out = np.full(len(target_ends), -1, dtype=np.int64)
    j = 0
    for i, end in enumerate(target_ends):
        last = end - 1
        while j < len(explainer_offsets) and explainer_offsets[j][1] <= last:
            j += 1
        if j < len(explainer_offsets) and explainer_offsets[j][0] <= last < explainer_offsets[j][1]:
            out[i] = j
    return out


def fit_projection(source: torch.Tensor, target: torch.Tensor, ridge: float = 1e-3) -> torch.Tensor:
    """Least-squares W (d_src, d_tgt), no bias: source @ W ~ target (a small ridge for stability)."""
    x = source.double()
    gram = x.T @ x
    gram += ridge * gram.diagonal().mean() * torch.eye(gram.shape[0], dtype=torch.float64)
    return torch.linalg.solve(gram, x.T @ target.double()).float()


def aligned_activations(load: Callable[[int], torch.Tensor], tokens: pl.DataFrame, seq_ids: Sequence[int], explainer,
                        explainer_tokenizer, layer_map: dict[int, int], batch_size: int = 16, progress: bool = True):
    """Target and explainer activations at aligned tokens of the given sequences, per target layer.

    Returns {layer: (h_target (n, d_M), h_explainer (n, d_E))}, the index (among `seq_ids`) of each row's
    sequence and each row's row in `tokens`.
    """
    rows = tokens.with_row_index("row").filter(pl.col("seq_id").is_in(list(seq_ids)))
    groups = rows.group_by("seq_id", maintain_order=True).agg("row", "text", "position")
    texts = ["".join(t) for t in groups["text"].to_list()]
    hidden_e, offsets, e_prefix = explainer_hidden(explainer, explainer_tokenizer, texts,
                                                   sorted(set(layer_map.values())), batch_size, progress)
    target_rows, explainer_index, seq_of = [], [], []
    for s, (row_ids, token_texts, positions) in enumerate(groups.select("row", "text", "position").iter_rows()):
        ends = np.cumsum([len(t) for t in token_texts])
        for r, m, p in zip(row_ids, align(ends.tolist(), offsets[s]), positions):
            if m >= 0 and m + e_prefix > 0 and p > 0:  # neither token is its model's attention sink
                target_rows.append(r)
                explainer_index.append((s, int(m)))
                seq_of.append(s)
    index = torch.tensor(target_rows, dtype=torch.long)
    out = {}
    for layer, e_layer in layer_map.items():
        h_m = load(layer)[index].float()
        h_e = torch.stack([hidden_e[e_layer][s][j] for s, j in explainer_index]).float()
        out[layer] = (h_m, h_e)
    return out, np.array(seq_of), np.array(target_rows)


def pretrained_projections(load: Callable[[int], torch.Tensor], tokens: pl.DataFrame, seq_ids: Sequence[int],
                           explainer, explainer_tokenizer, layer_map: dict[int, int], batch_size: int = 16,
                           progress: bool = True) -> tuple[dict[int, torch.Tensor], dict[int, dict]]:
    """Pi_l (d_E, d_M) per target layer minimising ||h^E - Pi_l h^M||^2 at aligned tokens (paper section 3.1),
    by least squares on even sequences; R^2 measured on odd sequences. Weights are in nn.Linear layout."""
    pairs, seq_of, _ = aligned_activations(load, tokens, seq_ids, explainer, explainer_tokenizer, layer_map,
                                           batch_size, progress)
    fit = torch.from_numpy(seq_of % 2 == 0)
    weights, stats = {}, {}
    for layer, (h_m, h_e) in pairs.items():
        w = fit_projection(h_m[fit], h_e[fit])  # (d_M, d_E)
        held = ~fit
        stats[layer] = {"explainer_layer": layer_map[layer], "fit_tokens": int(fit.sum()),
                        "eval_tokens": int(held.sum()), "r2": r_squared(h_m[held] @ w, h_e[held])}
        weights[layer] = w.T.contiguous()
    return weights, stats


def r_squared(predicted: torch.Tensor, target: torch.Tensor) -> float:
    residual = (target - predicted).pow(2).sum()
    total = (target - target.mean(0)).pow(2).sum()
    return float(1 - residual / total.clamp_min(1e-12))


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    if a.size < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return math.nan
    return float(np.corrcoef(a, b)[0, 1])


def explainer_hidden(model, tokenizer, texts: Sequence[str], layers: Sequence[int], batch_size: int = 16,
                     progress: bool = True):
    """Explainer residual streams of each text at `layers` and the token offsets (prefix tokens dropped)."""
    prefix = bos_prefix(tokenizer)
    encoded = [tokenizer(t, add_special_tokens=False, return_offsets_mapping=True) for t in texts]
    seqs = [prefix + list(e.input_ids) for e in encoded]
    hidden = layer_outputs(model, seqs, layers, batch_size, pad_id(tokenizer), progress, desc="explainer activations")
    hidden = {l: [h[len(prefix):].half() for h in hs] for l, hs in hidden.items()}  # float16 to hold many layers
    return hidden, [e.offset_mapping for e in encoded], len(prefix)


def activation_similarity(target_hidden: Callable[[int], torch.Tensor], tokens: pl.DataFrame, seq_ids: Sequence[int],
                          explainer, explainer_tokenizer, layer_map: dict[int, int],
                          feature_windows: dict[int, list[tuple[np.ndarray, list[np.ndarray]]]],
                          projections: dict[int, torch.Tensor] | None = None, projection: str = "none",
                          batch_size: int = 16, progress: bool = True) -> list[dict]:
    """Table 5 / Figure 6 statistics per target layer (see the module docstring).

    `target_hidden(layer)`: the cached (n_tokens, d_M) target activations (rows of `tokens`), loaded one layer
    at a time; `seq_ids`: the eval sequences both models read; `layer_map`: target layer -> explainer layer
    (:data:`INPUT_LAYER` for the input embedding); `feature_windows`: layer -> [(v, [token-row arrays of its
    windows])]; `projections`: target layer -> Pi_l (d_E, d_M), or None for the identity (the hidden sizes
    must then match); `projection`: how Pi_l was obtained, written into each result.
    """
    pairs, _, target_rows = aligned_activations(target_hidden, tokens, seq_ids, explainer, explainer_tokenizer,
                                                layer_map, batch_size, progress)
    lookup = {int(r): i for i, r in enumerate(target_rows)}
    results = []
    for layer, e_layer in layer_map.items():
        h_m, h_e = pairs[layer]
        pi = None if projections is None else projections.get(layer)
        if projections is not None and pi is None:
            raise KeyError(f"no projection Pi_l for target layer {layer}; the projections cover "
                           f"{sorted(projections)}")
        if pi is None and h_m.shape[1] != h_e.shape[1]:
            raise ValueError(f"the target's activations have {h_m.shape[1]} dimensions and the explainer's "
                             f"{h_e.shape[1]}: measuring their similarity needs a projection Pi_l")
        if pi is not None and tuple(pi.shape) != (h_e.shape[1], h_m.shape[1]):
            raise ValueError(f"Pi_l of layer {layer} has shape {tuple(pi.shape)}; expected (explainer hidden "
                             f"{h_e.shape[1]}, target hidden {h_m.shape[1]})")
        pi = None if pi is None else pi.float()
        mapped = h_m if pi is None else h_m @ pi.T  # Pi_l h^M, in the explainer's space
        cos = torch.nn.functional.cosine_similarity(mapped, h_e, dim=-1).numpy()
        pattern = []
        for v, windows in feature_windows.get(layer, []):
            vt = torch.as_tensor(v, dtype=torch.float32)
            ve = vt if pi is None else pi @ vt  # the direction the explainer sees: Pi_l v
            per_window = []
            for window in windows:
                index = [lookup[int(r)] for r in window if int(r) in lookup]
                if len(index) >= 4:
                    per_window.append(_pearson((h_e[index] @ ve).numpy(), (h_m[index] @ vt).numpy()))
            per_window = [c for c in per_window if not math.isnan(c)]
            if per_window:
                pattern.append(float(np.mean(per_window)))
        results.append({
            "layer": layer, "explainer_layer": e_layer, "projection": projection,
            "projection_r2": r_squared(mapped, h_e) if pi is not None else None,
            "tokens": len(cos), "dot_mean": float(np.mean(cos)), "dot_sd": float(np.std(cos)),
            "features": len(pattern), "pattern_mean": float(np.mean(pattern)) if pattern else None,
            "pattern_sd": float(np.std(pattern)) if pattern else None})
    return results
