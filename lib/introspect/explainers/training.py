"""The one training path of every explainer, for all three tasks.

:func:`fit_explainer` builds a fresh explainer, encodes the task's rows and trains it; :func:`train_explainer`
is the loop (plain PyTorch on a CPU or one GPU, DeepSpeed on GPUs).
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Sequence

import polars as pl
import torch
from tqdm.auto import tqdm

from introspect.explainers.distributed import (
    SignalsNoted,
    all_reduce_gradients,
    barrier,
    is_main,
    rank_and_world,
    shard,
    step_totals,
)
from introspect.explainers.model import Batch, Encoded, VectorExplainer, collate
from introspect.models.precision import autocast, dtype_name, resolve_dtype

log = logging.getLogger(__name__)


ENGINES = ("torch", "deepspeed")


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    """Optimisation settings (the paper's: AdamW, constant learning rate, weight decay 0.01).

    `batch_size` is the micro-batch of one rank; an optimiser step takes `grad_accum` micro-batches on each of
    the world's ranks (the global batch: ranks x batch_size x grad_accum). `checkpoint_dir` and
    `checkpoint_every` (optimiser steps; 0 = only when the job is told to stop) make the loop resumable.
    """

    lr: float = 5e-5
    weight_decay: float = 0.01
    epochs: int = 1
    batch_size: int = 8
    grad_accum: int = 1
    max_grad_norm: float = 1.0
    seed: int = 0
    engine: str = "torch"  # torch | deepspeed
    deepspeed_config: str | None = None  # a DeepSpeed JSON config (ZeRO stage etc.); engine deepspeed only
    gradient_checkpointing: bool = False  # recompute block activations in the backward pass
    compiled_optimizer: bool = False  # deepspeed on GPUs: FusedAdam (compiled at first use) instead of torch AdamW
    dtype: str = "float32"  # float32, or bfloat16: mixed precision (float32 weights and AdamW state, bf16 matmuls)
    checkpoint_dir: str | None = None
    checkpoint_every: int = 0

    def __post_init__(self):
        if self.dtype not in ("float32", "bfloat16"):
            raise ValueError(f"the training dtype must be float32 or bfloat16, got {self.dtype!r}")
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {self.engine!r}")
        if self.engine == "deepspeed" and not self.deepspeed_config:
            raise ValueError("engine deepspeed needs deepspeed_config: the path of a DeepSpeed JSON config")
        if self.checkpoint_every < 0:
            raise ValueError(f"checkpoint_every must be >= 0 steps, got {self.checkpoint_every}")

    def fingerprint(self) -> dict:
        """What a resumed run must share with the run that wrote the checkpoint."""
        fields = dataclasses.asdict(self)
        for key in ("checkpoint_dir", "checkpoint_every"):
            fields.pop(key)
        return fields


@dataclasses.dataclass
class ExplainerData:
    """Encoded examples with the vector (or none) and target layer of each."""

    items: Sequence[Encoded]  # a list, or a sequence that encodes on demand (FeatureItems)
    vectors: Any  # (N, d_target) tensor, or anything that gives a float tensor for a list of indices; or None
    layers: list[int]

    def __len__(self) -> int:
        return len(self.items)

    def batch(self, index: Sequence[int], pad_id: int, left_pad: bool = False) -> Batch:
        vectors = self.vectors[list(index)] if self.vectors is not None else None
        return collate([self.items[i] for i in index], pad_id, vectors, [self.layers[i] for i in index], left_pad)


def _batches(n: int, size: int, generator: torch.Generator) -> list[list[int]]:
    order = torch.randperm(n, generator=generator).tolist()
    return [order[i:i + size] for i in range(0, n, size)]


class TrainingInterrupted(RuntimeError):
    """The job was told to stop (SIGTERM, e.g. SLURM's warning before the time limit); a checkpoint was written."""


CHECKPOINT_FILE = "state.pt"


def _data_digest(data: ExplainerData) -> str:
    """sha256 of the examples: their encodings (or, for lazily encoded items, what they are encoded from), the
    layers and the vectors (a file-backed source hashes its rows a chunk at a time)."""
    digest = hashlib.sha256()
    if hasattr(data.items, "digest"):
        digest.update(data.items.digest().encode())
    else:
        for item in data.items:
            digest.update(json.dumps([item.input_ids, item.labels, item.vector_pos]).encode())
    digest.update(json.dumps(list(data.layers)).encode())
    if hasattr(data.vectors, "digest"):
        digest.update(data.vectors.digest().encode())
    elif data.vectors is not None:
        digest.update(data.vectors.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _fingerprint(explainer: VectorExplainer, data: ExplainerData, settings: TrainSettings, world: int) -> dict:
    """What a checkpoint must share with the training that finds it: settings, data, model, ranks."""
    # ds_shape: a ZeRO-3 parameter's full shape (its tensor holds only this rank's partition)
    shapes = {n: tuple(getattr(p, "ds_shape", p.shape)) for n, p in explainer.named_parameters() if p.requires_grad}
    deepspeed = Path(settings.deepspeed_config).read_text() if settings.deepspeed_config else None
    model = getattr(explainer.lm, "name_or_path", None)
    return {"settings": settings.fingerprint(), "deepspeed": deepspeed, "world": world, "trainable": shapes,
            "explainer": repr(explainer.settings), "model": str(model), "data": _data_digest(data)}


def _save_checkpoint(path: Path, state: dict) -> None:
    """Atomically: a temporary file in the same folder, then a rename (a kill never leaves half a file)."""
    path.mkdir(parents=True, exist_ok=True)
    tmp = path / f".{CHECKPOINT_FILE}.tmp"
    torch.save(state, tmp)
    os.replace(tmp, path / CHECKPOINT_FILE)
    log.info("checkpoint at step %d written to %s", state["step"], path / CHECKPOINT_FILE)


def _load_checkpoint(path: Path, fingerprint: dict) -> dict | None:
    file = path / CHECKPOINT_FILE
    if not file.exists():
        return None
    state = torch.load(file, map_location="cpu", weights_only=False)
    complete = all((path / state[key]).is_dir() for key in ("tag", "rng") if key in state)
    if state.get("fingerprint") != fingerprint or not complete:
        log.warning("checkpoint %s belongs to another training (settings, data or model differ); starting over",
                    file)
        return None
    return state


def train_explainer(explainer: VectorExplainer, data: ExplainerData, settings: TrainSettings) -> list[float]:
    """Fit `explainer` on `data` on this process's rank (one rank unless a process group is set up); returns
    the loss of every optimiser step (averaged over the step's micro-batches on all ranks).

    With `settings.checkpoint_dir` the loop saves a checkpoint every `checkpoint_every` steps and when it gets
    SIGTERM, and resumes from one it finds: the final weights equal an uninterrupted run's. Under DeepSpeed every
    rank saves and reloads its own shard (``engine.save_checkpoint``).
    """
    if len(data) == 0:
        raise ValueError("no training examples: the train split is empty (check the balancing settings and the "
                         "labels the data stage produced)")
    rank, world = rank_and_world()
    torch.manual_seed(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    if settings.gradient_checkpointing:
        # non-reentrant: gradients reach LoRA adapters and Pi_l although the block inputs come from embeddings
        explainer.lm.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        explainer.lm.config.use_cache = False
        log.info("gradient checkpointing on")
    explainer.train()
    named = [(n, p) for n, p in explainer.named_parameters() if p.requires_grad]
    params = [p for _, p in named]
    n_trainable = sum(p.numel() for p in params)
    log.info("training %d trainable parameters on %d examples: %s", n_trainable, len(data), settings)
    per_step = settings.batch_size * settings.grad_accum * world
    log.info("world size %d: global batch %d = %d ranks x micro-batch %d x grad_accum %d", world, per_step, world,
             settings.batch_size, settings.grad_accum)
    pad = explainer.tokenizer.pad_token_id
    micro_per_step = settings.grad_accum * world
    steps_per_epoch = math.ceil(math.ceil(len(data) / settings.batch_size) / micro_per_step)
    history: list[float] = []
    if settings.engine == "deepspeed":
        engine = _deepspeed_engine(explainer, params, settings)
        model = engine
        optimiser = None
        device = engine.device  # ZeRO-3 keeps only partitions in the modules: ask the engine where it runs
    else:
        # fused: one pass over each tensor per step instead of a dozen; on a 2-core CPU the default loop's
        # step was most of a bfloat16 SmolLM2 step (docs/benchmarks.md, "Training step")
        optimiser = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay,
                                      fused=_fused_adamw(params))
        model = explainer
        device = explainer.device

    # torch engine: autocast (float32 master weights); DeepSpeed: its own bf16 setting (configs/deepspeed/*.json)
    mixed = settings.dtype == "bfloat16" and settings.engine == "torch"
    precision = autocast(torch.bfloat16, device) if mixed else contextlib.nullcontext()
    log.info("precision: %s", "bfloat16 autocast over float32 weights" if mixed else
             "the DeepSpeed config's" if settings.engine == "deepspeed" else "float32")
    checkpoint = Path(settings.checkpoint_dir) if settings.checkpoint_dir else None
    fingerprint = _fingerprint(explainer, data, settings, world)
    start_epoch, skip_groups, step = 0, 0, 0
    epoch_generator_state = generator.get_state()
    resumed = _load_checkpoint(checkpoint, fingerprint) if checkpoint else None
    if resumed is not None:
        if settings.engine == "torch":
            with torch.no_grad():
                for n, p in named:
                    p.copy_(resumed["params"][n].to(p.device, p.dtype))
            optimiser.load_state_dict(resumed["optimiser"])
        else:  # every rank reads its own shard of weights and optimiser state
            loaded, _ = engine.load_checkpoint(str(checkpoint), tag=resumed["tag"])
            if loaded is None:
                raise RuntimeError(f"DeepSpeed could not read the checkpoint {checkpoint / resumed['tag']}; delete "
                                   f"{checkpoint} to start the training over")
        history = list(resumed["history"])
        start_epoch, skip_groups, step = resumed["epoch"], resumed["groups_done"], resumed["step"]
        epoch_generator_state = resumed["epoch_generator"]
        rng = torch.load(checkpoint / resumed["rng"] / f"{rank}.pt", weights_only=False)
        torch.set_rng_state(rng["cpu"])
        if rng["cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state(rng["cuda"])
        log.info("resumed from %s at step %d (epoch %d)", checkpoint / CHECKPOINT_FILE, step, start_epoch)

    def save(epoch: int, groups_done: int) -> None:
        """Every rank writes its random state (and under DeepSpeed its shard); rank 0 then writes state.pt, which
        names a complete checkpoint: a kill before it leaves the previous one in force."""
        if checkpoint is None:
            return
        checkpoint.mkdir(parents=True, exist_ok=True)
        state = {"fingerprint": fingerprint, "step": step, "epoch": epoch, "groups_done": groups_done,
                 "epoch_generator": epoch_generator_state, "history": history}
        if settings.engine == "deepspeed":
            state["tag"] = f"step{step}"
            engine.save_checkpoint(str(checkpoint), tag=state["tag"])
        elif rank == 0:  # the ranks hold the same weights and optimiser state: one copy is written
            state["params"] = {n: p.detach().cpu().clone() for n, p in named}
            state["optimiser"] = optimiser.state_dict()
        state["rng"] = f"rng-step{step}"  # a folder per checkpoint: state.pt names the one that belongs to it
        rng_dir = checkpoint / state["rng"]
        rng_dir.mkdir(parents=True, exist_ok=True)
        rng = rng_dir / f".{rank}.pt.tmp"
        torch.save({"cpu": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None}, rng)
        os.replace(rng, rng_dir / f"{rank}.pt")
        barrier()
        if rank == 0:
            _save_checkpoint(checkpoint, state)
            for old in [*checkpoint.glob("step*"), *checkpoint.glob("rng-step*")]:  # earlier checkpoints
                if old.is_dir() and old.name not in (state.get("tag"), state["rng"]):
                    shutil.rmtree(old, ignore_errors=True)
        barrier()

    total_steps = settings.epochs * steps_per_epoch
    bar = tqdm(total=total_steps, initial=step, desc="train", unit="step", mininterval=5, disable=rank != 0)
    with SignalsNoted("stopping at the next step boundary, after a checkpoint") as stop:
        for epoch in range(start_epoch, settings.epochs):
            if epoch > start_epoch:
                epoch_generator_state = generator.get_state()
            else:
                generator.set_state(epoch_generator_state)
            batches = _batches(len(data), settings.batch_size, generator)
            groups = [batches[i:i + micro_per_step] for i in range(0, len(batches), micro_per_step)]
            if settings.engine == "deepspeed" and len(groups[-1]) < micro_per_step and len(groups) == 1:
                raise ValueError(f"{len(batches)} micro-batches of {settings.batch_size} do not fill one DeepSpeed step "
                                 f"of {world} ranks x grad_accum {settings.grad_accum}: lower train.batch_size or "
                                 "grad_accum, or train on fewer GPUs")
            if settings.engine == "deepspeed" and len(groups[-1]) < micro_per_step and len(groups) > 1:
                # DeepSpeed steps after exactly grad_accum micro-batches on every rank: a short last group
                # would desynchronise the ranks, so its examples wait for the next epoch's order
                log.info("epoch %d: the last %d micro-batches do not fill a step on %d ranks; skipped", epoch,
                         len(groups[-1]), world)
                groups = groups[:-1]
            for g in range(skip_groups if epoch == start_epoch else 0, len(groups)):
                group = groups[g]
                total = 0.0
                for index in shard(group, rank, world):
                    batch = data.batch(index, pad).to(device)
                    with precision:
                        loss = model(batch)
                    if settings.engine == "deepspeed":
                        engine.backward(loss)
                        engine.step()
                    else:
                        (loss / len(group)).backward()
                    total += loss.item() / len(group)
                if settings.engine == "torch":
                    all_reduce_gradients(params)
                    if settings.max_grad_norm:
                        torch.nn.utils.clip_grad_norm_(params, settings.max_grad_norm)
                    optimiser.step()
                    optimiser.zero_grad(set_to_none=True)
                total, stopping = step_totals(total, bool(stop.received), device)
                history.append(total)
                step += 1
                bar.update(1)
                bar.set_postfix(epoch=epoch, loss=f"{total:.3f}")
                if stopping or (settings.checkpoint_every and step % settings.checkpoint_every == 0
                                and step < total_steps):
                    save(epoch, g + 1)
                if stopping:
                    bar.close()
                    raise TrainingInterrupted(f"stopped at step {step} of {total_steps} on a signal; the checkpoint "
                                              f"in {checkpoint} resumes it when the job runs again")
    bar.close()
    explainer.eval()
    if _zero_stage(settings) >= 3:  # the weights are partitioned over the ranks: gather them for the save
        explainer.gathered_state = gathered_state_dict(engine)
    log.info("final loss %.4f (first %.4f) after %d steps", history[-1], history[0], len(history))
    return history


def _fused_adamw(params) -> bool:
    """Whether torch's fused AdamW kernel takes these parameters: float tensors on a CPU or a CUDA device."""
    return bool(params) and all(p.device.type in ("cpu", "cuda") and p.dtype in
                                (torch.float32, torch.float16, torch.bfloat16, torch.float64) for p in params)


def _zero_stage(settings: TrainSettings) -> int:
    if settings.engine != "deepspeed":
        return 0
    return int(json.loads(Path(settings.deepspeed_config).read_text()).get("zero_optimization", {}).get("stage", 0))


def _single_process_group() -> None:
    """A process group of one rank for DeepSpeed when no launcher made one: a file store, so that two such
    trainings on one node never fight over a TCP port."""
    if torch.distributed.is_initialized():
        return
    folder = tempfile.mkdtemp(prefix="introspect-pg-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    store = torch.distributed.FileStore(os.path.join(folder, "store"), 1)
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    torch.distributed.init_process_group(backend, store=store, rank=0, world_size=1)
    os.environ.setdefault("LOCAL_RANK", "0")


def _deepspeed_engine(explainer: VectorExplainer, params, settings: TrainSettings):
    """A DeepSpeed engine around the explainer (ZeRO stage 1-3 from the config) on this process's ranks."""
    import deepspeed
    import torch._dynamo  # noqa: F401  (both imported before DeepSpeed patches module construction for ZeRO-3)
    import transformers.generation  # noqa: F401

    _single_process_group()
    config = json.loads(Path(settings.deepspeed_config).read_text())
    config["train_micro_batch_size_per_gpu"] = settings.batch_size
    config["gradient_accumulation_steps"] = settings.grad_accum
    config.setdefault("gradient_clipping", settings.max_grad_norm)
    fused = settings.compiled_optimizer and torch.cuda.is_available()
    config["optimizer"] = {"type": "AdamW", "params": {"lr": settings.lr, "weight_decay": settings.weight_decay,
                                                       "torch_adam": not fused}}
    on_gpu = torch.cuda.is_available()
    for key in ("bf16", "fp16"):
        if not on_gpu:
            config.pop(key, None)  # DeepSpeed's CPU path trains in float32
        elif config.get(key, {}).get("enabled") == "auto":
            supported = torch.cuda.is_bf16_supported() if key == "bf16" else not torch.cuda.is_bf16_supported()
            config[key]["enabled"] = supported
    if config.get("zero_optimization", {}).get("stage", 0) >= 3:
        # partition the explainer built on the host now, so that initialize moves only this rank's share to the
        # accelerator (it would move a module whose parameters are not yet partitioned there whole)
        deepspeed.zero.Init(module=explainer, config_dict_or_path=config)
    engine, *_ = deepspeed.initialize(model=explainer, model_parameters=params, config=config)
    return engine


def gathered_state_dict(engine) -> dict[str, torch.Tensor] | None:
    """The whole explainer's weights gathered from the ZeRO-3 partitions onto rank 0's CPU, one layer at a time
    (every rank must call it); None on the other ranks."""
    return engine._zero3_consolidated_16bit_state_dict()


def subsample(df: pl.DataFrame, n: int | None, seed: int) -> pl.DataFrame:
    """At most `n` rows, drawn with a seed (the whole frame when n is None or larger)."""
    if n is None or df.height <= n:
        return df
    return df.sample(n=n, seed=seed, shuffle=False)


def fit_explainer(rows: pl.DataFrame, model_dir: str, out_dir: str, examples, settings: dict, train: dict,
                  seed: int, device: str = "cpu", metadata: dict | None = None,
                  projection_weights: dict[int, torch.Tensor] | None = None, checkpoint_every: int = 0) -> list[float]:
    """Fine-tune a fresh explainer on `rows` (seeded subsample of `max_train`) and save the checkpoint.

    `examples(rows, tokenizer)` encodes the rows; `settings` holds the task's ExplainerSettings fields
    (target_hidden, layers, projection, chat); `train` is the config's train section. Returns step losses.
    On several ranks (:mod:`introspect.explainers.distributed`) every rank builds the same explainer and
    trains on its shard; rank 0 alone saves. Training state goes to ``<out_dir>.resume/`` every
    `checkpoint_every` steps and on SIGTERM, a re-run resumes from it, and it is removed after the save.
    """
    from introspect.explainers.model import ExplainerSettings, build_explainer
    from introspect.explainers.training import TrainSettings, train_explainer

    train = dict(train)
    compute = dtype_name(resolve_dtype(train.pop("compute_dtype", "float32"), device))
    max_train = train.pop("max_train", None)
    train.pop("projection", None)
    tuning = train.pop("tuning")
    lora = {k: train.pop(k) for k in ("lora_r", "lora_alpha", "lora_dropout", "train_embeddings", "vector_norm",
                                      "projection_tuning") if k in train}
    rows = subsample(rows, max_train, seed)
    settings_ = TrainSettings(**train, seed=seed, dtype=compute)
    # ZeRO-3 partitions the weights over the ranks' GPUs when DeepSpeed starts: build on the host, so that no GPU
    # ever holds the whole model (each rank holds one bf16 copy in host memory until then; docs/cluster.md)
    build_on = "cpu" if _zero_stage(settings_) >= 3 else device
    torch.manual_seed(seed)
    explainer = build_explainer(model_dir, ExplainerSettings(tuning=tuning, **settings, **lora), device=build_on,
                                projection_weights=projection_weights)
    data = examples(rows, explainer.tokenizer)
    if "has_changed" in rows.columns:
        log.info("training on %d examples (%d changed)", len(data), int(rows["has_changed"].sum()))
    else:
        log.info("training on %d examples", len(data))
    resume = f"{str(out_dir).rstrip('/')}.resume"
    history = train_explainer(explainer, data, dataclasses.replace(settings_, checkpoint_dir=resume,
                                                                   checkpoint_every=checkpoint_every))
    if is_main():
        explainer.save(out_dir, metadata={**(metadata or {}), "losses": history, "n_train": len(data),
                                          "train_dtype": compute},
                       state_dict=getattr(explainer, "gathered_state", None))
        shutil.rmtree(resume, ignore_errors=True)
    barrier()
    return history


def train_split(dataset: pl.DataFrame, what: str) -> pl.DataFrame:
    """The train split, or an error that says why there is nothing to learn from."""
    rows = dataset.filter(pl.col("split") == "train")
    if rows.height == 0:
        raise ValueError(f"the {what} dataset has no train rows; its balanced train split is empty (a target "
                         "whose outputs never change loses every row to balancing)")
    return rows
