"""Sparse autoencoders on cached residual-stream activations: TopK training (offline) and a common encoder.

One file per layer, with the keys of :data:`introspect.sources.downloads.SAE_KEYS` (``decoder`` and ``encoder`` are
(n_features, d_model); ``decoder_bias``; ``encoder_bias``; ``threshold`` for JumpReLU) and string metadata
``activation`` (``topk`` or ``jumprelu``), ``k`` (TopK) and ``input_scale`` (activations are multiplied by it
before encoding; 1 when absent). Both a trained TopK SAE and a downloaded LlamaScope layer load into
:class:`SAE`, so everything downstream (exemplars, labels, similarity) treats them alike.

TopK SAE (Gao et al., 2024): ``z = TopK(ReLU(W_enc (x - b_dec) + b_enc))``, ``x_hat = W_dec^T z + b_dec`` with
unit-norm decoder rows, trained on MSE plus the AuxK loss (the residual error reconstructed from the top
``k_aux`` latents that have not fired for ``dead_after`` tokens), which keeps latents from dying.
Inputs are scaled so that their mean squared norm is ``d_model`` (``input_scale``), so one learning rate
fits models whose residual norms differ by orders of magnitude.

Devices: activations stay where they are (the CPU, float16 as cached); training, FVU/L0 evaluation and
exemplar encoding move one batch at a time to the job's device (``compute.device``), encode there in float32,
and bring only the results back to the CPU. :meth:`SAE.on` gives the SAE on a device without touching the
caller's copy.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch
from tqdm.auto import tqdm

from introspect.tensorfiles import save_tensors

log = logging.getLogger(__name__)


class SAEError(ValueError):
    """An SAE file or setting is unusable; the message says which and what to do."""


@dataclasses.dataclass(frozen=True)
class SAESettings:
    expansion: int = 4          # features = expansion x d_model
    k: int = 32                 # active latents per token
    epochs: int = 8
    batch_size: int = 1024
    lr: float = 1.0e-3
    aux_k: int | None = None    # default d_model // 2
    aux_coef: float = 1.0 / 32
    dead_after: int = 100_000   # tokens without firing before a latent counts as dead
    seed: int = 0


class SAE(torch.nn.Module):
    """Encoder/decoder of a TopK or JumpReLU SAE; feature i is row i of `encoder` and `decoder`."""

    def __init__(self, encoder: torch.Tensor, encoder_bias: torch.Tensor, decoder: torch.Tensor,
                 decoder_bias: torch.Tensor, activation: str = "topk", k: int | None = None,
                 threshold: torch.Tensor | None = None, input_scale: float = 1.0,
                 subtract_decoder_bias: bool = True):
        super().__init__()
        if activation not in ("topk", "jumprelu"):
            raise SAEError(f"unknown SAE activation {activation!r}; expected topk or jumprelu")
        if activation == "topk" and not k:
            raise SAEError("a TopK SAE needs k")
        if activation == "jumprelu" and threshold is None:
            raise SAEError("a JumpReLU SAE needs its threshold (hyperparams.json or the checkpoint)")
        self.encoder = torch.nn.Parameter(encoder.float())
        self.encoder_bias = torch.nn.Parameter(encoder_bias.float())
        self.decoder = torch.nn.Parameter(decoder.float())
        self.decoder_bias = torch.nn.Parameter(decoder_bias.float())
        self.register_buffer("threshold", None if threshold is None else threshold.float())
        self.activation, self.k = activation, k
        self.input_scale, self.subtract_decoder_bias = float(input_scale), subtract_decoder_bias

    def on(self, device: str | torch.device) -> "SAE":
        """This SAE with its weights on `device`: itself when they are there already, else a new SAE whose
        tensors are copied straight to `device` (this one stays where it is)."""
        device = torch.device(device)
        here = self.decoder.device
        if here == device or (device.index is None and here.type == device.type):
            return self
        move = lambda t: None if t is None else t.detach().to(device)  # noqa: E731
        return SAE(move(self.encoder), move(self.encoder_bias), move(self.decoder), move(self.decoder_bias),
                   activation=self.activation, k=self.k, threshold=move(self.threshold),
                   input_scale=self.input_scale, subtract_decoder_bias=self.subtract_decoder_bias)

    @property
    def device(self) -> torch.device:
        """Where the SAE's weights are (encoding runs there)."""
        return self.decoder.device

    @property
    def n_features(self) -> int:
        return self.decoder.shape[0]

    @property
    def d_model(self) -> int:
        return self.decoder.shape[1]

    def pre_activations(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float() * self.input_scale
        if self.subtract_decoder_bias:
            x = x - self.decoder_bias
        return x @ self.encoder.T + self.encoder_bias

    def activate(self, pre: torch.Tensor) -> torch.Tensor:
        if self.activation == "jumprelu":
            return pre * (pre > self.threshold)
        values, index = torch.relu(pre).topk(self.k, dim=-1)
        return torch.zeros_like(pre).scatter_(-1, index, values)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Feature activations (n, n_features), in the SAE's own (scaled) units."""
        return self.activate(self.pre_activations(x))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Reconstruction in the caller's units (the input scale undone)."""
        return (z @ self.decoder + self.decoder_bias) / self.input_scale

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {"encoder": self.encoder.detach(), "encoder_bias": self.encoder_bias.detach(),
               "decoder": self.decoder.detach(), "decoder_bias": self.decoder_bias.detach()}
        if self.threshold is not None:
            out["threshold"] = self.threshold
        return {name: t.contiguous().cpu() for name, t in out.items()}

    def save(self, path: str | Path, **metadata: str) -> Path:
        meta = {"activation": self.activation, "input_scale": repr(self.input_scale),
                "subtract_decoder_bias": str(self.subtract_decoder_bias).lower(), **metadata}
        if self.k:
            meta["k"] = str(self.k)
        return save_tensors(self.tensors(), path, meta)

    @classmethod
    def load(cls, path: str | Path) -> "SAE":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as handle:
                meta = handle.metadata() or {}
                tensors = {name: handle.get_tensor(name) for name in handle.keys()}
        except (OSError, ValueError) as exc:
            raise SAEError(f"{path}: not a readable SAE safetensors file ({exc}); re-run its rule") from exc
        missing = {"encoder", "encoder_bias", "decoder"} - set(tensors)
        if missing:
            raise SAEError(f"{path}: missing {sorted(missing)}; an SAE file needs encoder, encoder_bias, decoder")
        activation = meta.get("activation") or ("jumprelu" if "threshold" in tensors else "topk")
        d_model = tensors["decoder"].shape[1]
        return cls(tensors["encoder"], tensors["encoder_bias"], tensors["decoder"],
                   tensors.get("decoder_bias", torch.zeros(d_model)), activation=activation,
                   k=int(meta["k"]) if meta.get("k") else None, threshold=tensors.get("threshold"),
                   input_scale=float(meta.get("input_scale", 1.0)),
                   subtract_decoder_bias=meta.get("subtract_decoder_bias", "false") == "true")


def input_scale(x: torch.Tensor, sample: int = 20000) -> float:
    """The factor that makes the mean squared norm of `x` equal its dimension."""
    rows = x[:: max(1, x.shape[0] // sample)].float()
    return float(math.sqrt(x.shape[1] / rows.pow(2).sum(-1).mean().clamp_min(1e-12)))


def _init_topk(x: torch.Tensor, settings: SAESettings, scale: float, generator: torch.Generator) -> SAE:
    d = x.shape[1]
    n = settings.expansion * d
    decoder = torch.randn(n, d, generator=generator)
    decoder /= decoder.norm(dim=1, keepdim=True)
    bias = (x[:: max(1, x.shape[0] // 20000)].float() * scale).mean(0)
    return SAE(decoder.clone(), torch.zeros(n), decoder, bias,
               activation="topk", k=settings.k, input_scale=scale)


def _encoding_device(sae: SAE, device: str | torch.device | None) -> torch.device:
    return sae.device if device is None else torch.device(device)


def fvu(sae: SAE, x: torch.Tensor, batch_size: int = 4096, device: str | torch.device | None = None) -> float:
    """Fraction of variance unexplained: sum ||x - x_hat||^2 / sum ||x - mean(x)||^2.

    `x` (n, d; float16 or float32) stays where it is; batches of `batch_size` rows are encoded on `device`
    (default: where the SAE's weights are) in float32. The mean is taken in float32 where `x` is, without a
    float32 copy of all of `x`."""
    device = _encoding_device(sae, device)
    sae = sae.on(device)
    mean = x.mean(0, dtype=torch.float32).to(device)
    err = total = 0.0
    with torch.no_grad():
        for start in range(0, x.shape[0], batch_size):
            batch = x[start:start + batch_size].to(device).float()
            err += (batch - sae.decode(sae.encode(batch))).pow(2).sum().item()
            total += (batch - mean).pow(2).sum().item()
    return err / max(total, 1e-12)


def sae_stats(sae: SAE, x_eval: torch.Tensor, batch_size: int = 4096,
              device: str | torch.device | None = None) -> dict:
    """FVU, mean L0 and the share of latents that never fire, on held-out activations.

    Encoding runs on `device` (default: where the SAE's weights are), `batch_size` rows at a time; `x_eval`
    stays where it is and the statistics are plain Python numbers."""
    device = _encoding_device(sae, device)
    sae = sae.on(device)
    fired = torch.zeros(sae.n_features, dtype=torch.bool, device=device)
    l0 = 0.0
    with torch.no_grad():
        for start in range(0, x_eval.shape[0], batch_size):
            z = sae.encode(x_eval[start:start + batch_size].to(device))
            active = z > 0
            l0 += active.sum().item()
            fired |= active.any(0)
    return {"fvu": fvu(sae, x_eval, batch_size, device), "l0": l0 / max(1, x_eval.shape[0]),
            "dead_fraction": float(1 - fired.float().mean().item()), "n_features": sae.n_features,
            "eval_tokens": int(x_eval.shape[0])}


def train_topk(x: torch.Tensor, settings: SAESettings, progress: bool = True,
               device: str | torch.device = "cpu") -> tuple[SAE, list[float]]:
    """Train a TopK SAE on activations `x` (n, d, kept where it is); batches go to `device`.

    Returns the SAE (on the CPU) and the mean loss of each epoch."""
    torch.manual_seed(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    scale = input_scale(x)
    sae = _init_topk(x, settings, scale, generator).to(device)
    aux_k = settings.aux_k or x.shape[1] // 2
    optimizer = torch.optim.Adam(sae.parameters(), lr=settings.lr, betas=(0.9, 0.999))
    since_fired = torch.zeros(sae.n_features, dtype=torch.long, device=device)
    history = []
    started = time.perf_counter()
    for epoch in range(settings.epochs):
        order = torch.randperm(x.shape[0], generator=generator)
        losses = []
        bar = tqdm(range(0, x.shape[0], settings.batch_size), desc=f"SAE epoch {epoch + 1}/{settings.epochs}",
                   unit="batch", disable=not progress, leave=False)
        for start in bar:
            batch = x[order[start:start + settings.batch_size]].to(device).float()
            target = batch * scale
            pre = sae.pre_activations(batch)
            z = sae.activate(pre)
            recon = z @ sae.decoder + sae.decoder_bias
            residual = target - recon
            variance = (target - target.mean(0)).pow(2).sum(-1).mean().clamp_min(1e-8)
            loss = residual.pow(2).sum(-1).mean() / variance
            with torch.no_grad():
                since_fired += batch.shape[0]
                since_fired[(z > 0).any(0)] = 0
            dead = since_fired > settings.dead_after
            if dead.any():
                k = min(aux_k, int(dead.sum()))
                values, index = torch.relu(pre.masked_fill(~dead, -math.inf)).topk(k, dim=-1)
                aux = torch.zeros_like(pre).scatter_(-1, index, values) @ sae.decoder
                aux_loss = (residual.detach() - aux).pow(2).sum(-1).mean() / residual.detach().pow(2).sum(-1).mean().clamp_min(1e-8)
                loss = loss + settings.aux_coef * torch.nan_to_num(aux_loss)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            with torch.no_grad():  # keep decoder rows unit-norm; drop the gradient along each row
                row = sae.decoder / sae.decoder.norm(dim=1, keepdim=True)
                sae.decoder.grad -= (sae.decoder.grad * row).sum(1, keepdim=True) * row
            optimizer.step()
            with torch.no_grad():
                sae.decoder /= sae.decoder.norm(dim=1, keepdim=True)
            losses.append(loss.item())
        history.append(float(np.mean(losses)))
        log.info("SAE epoch %d/%d: normalised loss %.4f, dead latents %d (%.0f s)", epoch + 1, settings.epochs,
                 history[-1], int((since_fired > settings.dead_after).sum()), time.perf_counter() - started)
    return sae.cpu(), history


def features_frame(sae: SAE, layer: int) -> pl.DataFrame:
    """(layer, feature, vector): the decoder direction of each feature, unit norm, float32."""
    directions = sae.decoder.detach().cpu().float()
    directions = directions / directions.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return pl.DataFrame({"layer": np.full(sae.n_features, layer, dtype=np.int64),
                         "feature": np.arange(sae.n_features, dtype=np.int64),
                         "vector": directions.numpy()},
                        schema={"layer": pl.Int64, "feature": pl.Int64,
                                "vector": pl.Array(pl.Float32, sae.d_model)})


def from_download(path: str | Path) -> SAE:
    """A downloaded LlamaScope/Gemma Scope layer (introspect.sources.downloads format) as an SAE (JumpReLU)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata() or {}
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    import json

    norm = json.loads(meta.get("hyperparams") or "{}").get("dataset_average_activation_norm", {}).get("in")
    if meta.get("input_norm") == "none":  # Gemma Scope reads raw activations
        norm = math.sqrt(tensors["decoder"].shape[1])
    if not norm:
        raise SAEError(f"{path}: no dataset_average_activation_norm in its hyperparams.json metadata; LlamaScope "
                       "SAEs read inputs rescaled by it, so without it thresholds and exemplars would be wrong. "
                       "Download the layer's hyperparams.json too (introspect.sources.downloads fetches it with the weights)")
    scale = math.sqrt(tensors["decoder"].shape[1]) / float(norm)
    if "encoder" not in tensors:
        raise SAEError(f"{path}: no encoder weights; download with the encoder (with_encoder=True)")
    d_model = tensors["decoder"].shape[1]
    return SAE(tensors["encoder"], tensors["encoder_bias"], tensors["decoder"],
               tensors.get("decoder_bias", torch.zeros(d_model)), activation="jumprelu",
               threshold=tensors.get("threshold"), input_scale=scale, subtract_decoder_bias=False)


def sae_for_layer(settings: dict, hidden: torch.Tensor, tokens, layer: int, seed: int,
                  scratch: str | Path, progress: bool = True, device: str = "cpu") -> tuple[SAE, dict]:
    """The SAE of one layer from features.sae (train on train tokens, or fetch LlamaScope), with its
    FVU / L0 / dead share on the eval tokens. Training and evaluation run on `device`; the SAE returned is on
    the CPU."""
    from introspect.groundtruth.activations import usable_rows

    backend = settings["backend"]
    train_rows = torch.from_numpy(usable_rows(tokens, "train"))
    eval_rows = torch.from_numpy(usable_rows(tokens, "eval"))
    if len(eval_rows) == 0:
        raise SAEError("no eval tokens to measure the SAE on; raise features.corpus.eval_fraction")
    started = time.perf_counter()
    history: list[float] = []
    if backend == "train":
        options = {k: settings[k] for k in ("expansion", "k", "epochs", "batch_size", "lr") if k in settings}
        sae, history = train_topk(hidden[train_rows], SAESettings(seed=seed, **options), progress=progress,
                                  device=device)
    elif backend in ("llamascope", "gemmascope"):
        from introspect.sources import downloads

        path = Path(scratch) / f"{backend}-layer{layer}.safetensors"
        if backend == "llamascope":
            downloads.download_llamascope_layer(settings["repo"], layer, path, revision=settings.get("revision"),
                                                expected_d_model=hidden.shape[1])
        else:
            downloads.download_gemmascope_layer(settings["repo"], layer, path,
                                                settings.get("file", downloads.GEMMASCOPE_FILE),
                                                revision=settings.get("revision"), expected_d_model=hidden.shape[1])
        sae = from_download(path)
    else:
        raise SAEError(f"features.sae.backend: unknown backend {backend!r}; use train, llamascope or gemmascope")
    if sae.d_model != hidden.shape[1]:
        raise SAEError(f"the SAE reads {sae.d_model}-d vectors but layer {layer} is {hidden.shape[1]}-d")
    stats = sae_stats(sae, hidden[eval_rows], device=device)
    # the time goes to the log, not into the stats file: the same inputs must give the same bytes
    log.info("layer %d SAE (%s) ready in %.1f s", layer, backend, time.perf_counter() - started)
    stats.update(layer=layer, backend=backend, train_tokens=int(len(train_rows)), loss_by_epoch=history)
    if backend == "train":
        stats.update(k=sae.k, expansion=sae.n_features // sae.d_model)
    return sae, stats
