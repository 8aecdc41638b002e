"""The one training path of every explainer, for all three tasks.

:func:`fit_explainer` builds a fresh explainer, encodes the task's rows and trains it; :func:`train_explainer`
is the loop (plain PyTorch on a CPU or one GPU, DeepSpeed on GPUs).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from pathlib import Path
from typing import Sequence

import polars as pl
import torch
from tqdm.auto import tqdm

from introspect.explainers.model import Batch, Encoded, VectorExplainer, collate

log = logging.getLogger(__name__)


ENGINES = ("torch", "deepspeed")


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    """Optimisation settings (the paper's: AdamW, constant learning rate, weight decay 0.01)."""

    lr: float = 5e-5
    weight_decay: float = 0.01
    epochs: int = 1
    batch_size: int = 8
    grad_accum: int = 1
    max_grad_norm: float = 1.0
    seed: int = 0
    engine: str = "torch"  # torch | deepspeed
    deepspeed_config: str | None = None  # a DeepSpeed JSON config (ZeRO stage etc.); engine deepspeed only

    def __post_init__(self):
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {self.engine!r}")
        if self.engine == "deepspeed" and not self.deepspeed_config:
            raise ValueError("engine deepspeed needs deepspeed_config: the path of a DeepSpeed JSON config")


@dataclasses.dataclass
class ExplainerData:
    """Encoded examples with the vector (or none) and target layer of each."""

    items: list[Encoded]
    vectors: torch.Tensor | None  # (N, d_target)
    layers: list[int]

    def __len__(self) -> int:
        return len(self.items)

    def batch(self, index: Sequence[int], pad_id: int, left_pad: bool = False) -> Batch:
        vectors = self.vectors[list(index)] if self.vectors is not None else None
        return collate([self.items[i] for i in index], pad_id, vectors, [self.layers[i] for i in index], left_pad)


def _batches(n: int, size: int, generator: torch.Generator) -> list[list[int]]:
    order = torch.randperm(n, generator=generator).tolist()
    return [order[i:i + size] for i in range(0, n, size)]


def train_explainer(explainer: VectorExplainer, data: ExplainerData, settings: TrainSettings) -> list[float]:
    """Fit `explainer` on `data`; returns the loss of every optimiser step."""
    if len(data) == 0:
        raise ValueError("no training examples: the train split is empty (check the balancing settings and the "
                         "labels the data stage produced)")
    torch.manual_seed(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    explainer.train()
    params = [p for p in explainer.parameters() if p.requires_grad]
    n_trainable = sum(p.numel() for p in params)
    log.info("training %d trainable parameters on %d examples: %s", n_trainable, len(data), settings)
    pad = explainer.tokenizer.pad_token_id
    steps_per_epoch = math.ceil(len(data) / (settings.batch_size * settings.grad_accum))
    history: list[float] = []
    if settings.engine == "deepspeed":
        engine = _deepspeed_engine(explainer, params, settings)
        step_fn = lambda loss: (engine.backward(loss), engine.step())  # noqa: E731
        model = engine
    else:
        optimiser = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
        model = explainer

    bar = tqdm(total=settings.epochs * steps_per_epoch, desc="train", unit="step", mininterval=5)
    for epoch in range(settings.epochs):
        batches = _batches(len(data), settings.batch_size, generator)
        for start in range(0, len(batches), settings.grad_accum):
            group = batches[start:start + settings.grad_accum]
            total = 0.0
            for index in group:
                batch = data.batch(index, pad).to(explainer.device)
                loss = model(batch)
                if settings.engine == "deepspeed":
                    step_fn(loss)
                else:
                    (loss / len(group)).backward()
                total += loss.item() / len(group)
            if settings.engine == "torch":
                if settings.max_grad_norm:
                    torch.nn.utils.clip_grad_norm_(params, settings.max_grad_norm)
                optimiser.step()
                optimiser.zero_grad(set_to_none=True)
            history.append(total)
            bar.update(1)
            bar.set_postfix(epoch=epoch, loss=f"{total:.3f}")
    bar.close()
    explainer.eval()
    log.info("final loss %.4f (first %.4f) after %d steps", history[-1], history[0], len(history))
    return history


def _deepspeed_engine(explainer: VectorExplainer, params, settings: TrainSettings):
    """A DeepSpeed engine around the explainer; a single process when no launcher set up the ranks."""
    import deepspeed

    for key, value in {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29511", "RANK": "0", "LOCAL_RANK": "0",
                       "WORLD_SIZE": "1"}.items():
        os.environ.setdefault(key, value)
    config = json.loads(Path(settings.deepspeed_config).read_text())
    config["train_micro_batch_size_per_gpu"] = settings.batch_size
    config["gradient_accumulation_steps"] = settings.grad_accum
    config.setdefault("gradient_clipping", settings.max_grad_norm)
    config["optimizer"] = {"type": "AdamW", "params": {"lr": settings.lr, "weight_decay": settings.weight_decay,
                                                   "torch_adam": not torch.cuda.is_available()}}
    if config.get("zero_optimization", {}).get("stage", 0) >= 3:
        raise ValueError(
            f"{settings.deepspeed_config}: ZeRO stage 3 partitions the weights and the checkpoint writer does not "
            "gather them yet; use stage 1 or 2"
        )
    on_gpu = torch.cuda.is_available()
    for key in ("bf16", "fp16"):
        if not on_gpu:
            config.pop(key, None)  # DeepSpeed's CPU path trains in float32
        elif config.get(key, {}).get("enabled") == "auto":
            supported = torch.cuda.is_bf16_supported() if key == "bf16" else not torch.cuda.is_bf16_supported()
            config[key]["enabled"] = supported
    engine, *_ = deepspeed.initialize(model=explainer, model_parameters=params, config=config)
    return engine


def subsample(df: pl.DataFrame, n: int | None, seed: int) -> pl.DataFrame:
    """At most `n` rows, drawn with a seed (the whole frame when n is None or larger)."""
    if n is None or df.height <= n:
        return df
    return df.sample(n=n, seed=seed, shuffle=False)


def fit_explainer(rows: pl.DataFrame, model_dir: str, out_dir: str, examples, settings: dict, train: dict,
                  seed: int, device: str = "cpu", metadata: dict | None = None,
                  projection_weights: dict[int, torch.Tensor] | None = None) -> list[float]:
    """Fine-tune a fresh explainer on `rows` (seeded subsample of `max_train`) and save the checkpoint.

    `examples(rows, tokenizer)` encodes the rows; `settings` holds the task's ExplainerSettings fields
    (target_hidden, layers, projection, chat); `train` is the config's train section. Returns step losses.
    """
    from introspect.explainers.model import ExplainerSettings, build_explainer
    from introspect.explainers.training import TrainSettings, train_explainer

    train = dict(train)
    max_train = train.pop("max_train", None)
    train.pop("projection", None)
    tuning = train.pop("tuning")
    lora = {k: train.pop(k) for k in ("lora_r", "lora_alpha", "lora_dropout", "train_embeddings", "vector_norm")
            if k in train}
    rows = subsample(rows, max_train, seed)
    torch.manual_seed(seed)
    explainer = build_explainer(model_dir, ExplainerSettings(tuning=tuning, **settings, **lora), device=device,
                                projection_weights=projection_weights)
    data = examples(rows, explainer.tokenizer)
    if "has_changed" in rows.columns:
        log.info("training on %d examples (%d changed)", len(data), int(rows["has_changed"].sum()))
    else:
        log.info("training on %d examples", len(data))
    history = train_explainer(explainer, data, TrainSettings(**train, seed=seed))
    explainer.save(out_dir, metadata={**(metadata or {}), "losses": history, "n_train": len(data)})
    return history


def train_split(dataset: pl.DataFrame, what: str) -> pl.DataFrame:
    """The train split, or an error that says why there is nothing to learn from."""
    rows = dataset.filter(pl.col("split") == "train")
    if rows.height == 0:
        raise ValueError(f"the {what} dataset has no train rows; its balanced train split is empty (a target "
                         "whose outputs never change loses every row to balancing)")
    return rows
