"""GPU memory of an explainer training job, by arithmetic: what each rank holds, and which jobs the config runs.

Per rank, in bytes, for P parameters of which T are trained, R ranks, ZeRO stage z, bf16 on the GPU:

- weights: 2P (bf16), divided by R under ZeRO-3, plus the layer ZeRO-3 gathers (twice its bf16 size: the
  layer in use and the one prefetched);
- gradients: 2T, divided by R from ZeRO-2 on;
- AdamW state: 12T (fp32 master copy, first and second moment), divided by R from ZeRO-1 on;
- activations of a micro-batch of b sequences of s tokens, h hidden, a heads, L layers: s b h (34 + 5 a s / h)
  per layer without gradient checkpointing (Korthikanti et al., 2022), or 2 s b h per layer (the block inputs)
  plus one layer's full set with it; the logits s b V (bf16, and fp32 for the loss) come on top;
- 3 GB of CUDA context, allocator slack and communication buffers.

Trained parameters: every parameter for full tuning (Pi_l included); under LoRA the adapters of every linear
layer (r (in + out) each) and Pi_l's low-rank update. An estimate of the steady state, not a measurement:
DeepSpeed's own buffers (the live-parameter cache, fp32 gradient partitions at the step) are covered only roughly
by the overhead, and SwiGLU blocks keep somewhat more activations than the formula's GPT block. docs/cluster.md
holds the table for configs/paper.yaml.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

GB = 1e9
OVERHEAD = 3 * GB
#: tokens per training example of each task, rounded up (feature questions are short; hint prompts hold a
#: whole multiple-choice question in the chat template)
SEQ_LEN = {"features": 96, "patching": 256, "hints": 512}


@dataclasses.dataclass(frozen=True)
class ModelShape:
    """The sizes of a decoder that the arithmetic needs (from the model registry)."""

    n_params: float
    n_layers: int
    hidden: int
    vocab: int = 128_256
    intermediate: int | None = None

    @property
    def heads(self) -> int:
        return max(1, self.hidden // 128)

    def linear_shapes(self) -> list[tuple[int, int]]:
        """(in, out) of the linear layers of one block (Llama-style: GQA with 8 KV heads, gated MLP)."""
        h, inter = self.hidden, self.intermediate or int(3.5 * self.hidden)
        kv = min(h, 8 * 128)
        return [(h, h), (h, kv), (h, kv), (h, h), (h, inter), (h, inter), (inter, h)]


def shape_of(entry: dict[str, Any]) -> ModelShape:
    """A registry entry's shape; n_params defaults to the Llama-style count 13 L h^2 + 2 V h."""
    layers, hidden = int(entry["n_layers"]), int(entry["hidden_size"])
    vocab = int(entry.get("vocab_size") or 128_256)
    params = entry.get("n_params") or 13 * layers * hidden ** 2 + 2 * vocab * hidden
    return ModelShape(float(params), layers, hidden, vocab, entry.get("intermediate_size"))


@dataclasses.dataclass(frozen=True)
class TrainingJob:
    """One explainer training job as the config defines it."""

    task: str
    name: str
    explainer: str
    tuning: str
    batch_size: int  # micro-batch per rank
    grad_accum: int
    gpus: int
    zero_stage: int
    gradient_checkpointing: bool
    lora_r: int
    target_hidden: int | None  # Pi_l's input size (None: no vector)
    n_projections: int
    epochs: int
    target_layers: int  # feature task: the target layers whose features are the examples (else 0)

    @property
    def global_batch(self) -> int:
        return self.gpus * self.batch_size * self.grad_accum


def trained_params(job: TrainingJob, shape: ModelShape) -> float:
    pi = (job.target_hidden or 0) * shape.hidden * job.n_projections
    if job.tuning == "full":
        return shape.n_params + pi
    adapters = shape.n_layers * sum(i + o for i, o in shape.linear_shapes()) * job.lora_r
    pi_update = job.n_projections * ((job.target_hidden or 0) + shape.hidden) * job.lora_r
    return adapters + pi_update


def per_gpu_bytes(job: TrainingJob, shape: ModelShape, checkpointing: bool | None = None) -> dict[str, float]:
    """Bytes per rank of `job` (optionally with gradient checkpointing forced on or off), by kind and total."""
    ckpt = job.gradient_checkpointing if checkpointing is None else checkpointing
    r, z = max(1, job.gpus), job.zero_stage
    t = trained_params(job, shape)
    pi = (job.target_hidden or 0) * shape.hidden * job.n_projections  # Pi_l (frozen under LoRA, trained else)
    frozen_and_trained = shape.n_params + pi + (t if job.tuning == "lora" else 0)
    weights = 2 * frozen_and_trained / (r if z >= 3 else 1)
    if z >= 3:
        weights += 2 * 2 * (shape.n_params - 2 * shape.vocab * shape.hidden) / shape.n_layers
    grads = 2 * t / (r if z >= 2 else 1)
    optimiser = 12 * t / (r if z >= 1 else 1)
    s, b, h = SEQ_LEN[job.task], job.batch_size, shape.hidden
    full_layer = s * b * h * (34 + 5 * shape.heads * s / h)
    acts = (2 * s * b * h * shape.n_layers + full_layer) if ckpt else full_layer * shape.n_layers
    logits = s * b * shape.vocab * (2 + 4)
    parts = {"weights": weights, "gradients": grads, "optimiser": optimiser, "activations": acts,
             "logits": logits, "overhead": OVERHEAD}
    parts["total"] = sum(parts.values())
    return parts


def gpu_hours(job: TrainingJob, shape: ModelShape, rows: int, gpu_flops: float = 400e12) -> float:
    """GPU-hours of `job` on `rows` examples: 6 P FLOPs per trained token for full tuning, 4 P for LoRA (no weight
    gradients of the frozen base), 2 P more for gradient checkpointing's recomputation, at `gpu_flops` per GPU."""
    per_token = (6 if job.tuning == "full" else 4) * shape.n_params + (2 * shape.n_params if job.gradient_checkpointing
                                                                       else 0)
    return rows * job.epochs * SEQ_LEN[job.task] * per_token / gpu_flops / 3600


def _zero_stage(train: dict, root: Path) -> int:
    if train.get("engine") != "deepspeed":
        return 0
    path = Path(train["deepspeed_config"])
    path = path if path.is_absolute() else root / path
    return int(json.loads(path.read_text()).get("zero_optimization", {}).get("stage", 0))


def training_jobs(config: dict[str, Any], root: str | Path = ".") -> list[TrainingJob]:
    """Every explainer training job of a config: one per feature run (a scaling point trains the same explainer
    on fewer features: same memory), per trained patching or hint row."""
    root = Path(root)
    models = config["models"]
    default_gpus = int(config["compute"].get("gpus", {}).get("train", 0))
    jobs = []

    def job(task, name, explainer, train, target_hidden, n_proj, target_layers=0):
        gpus = models[explainer].get("train_gpus") or default_gpus or 1
        return TrainingJob(task, name, explainer, train["tuning"], int(train["batch_size"]),
                           int(train.get("grad_accum", 1)), int(gpus), _zero_stage(train, root),
                           bool(train.get("gradient_checkpointing", False)), int(train.get("lora_r", 16)),
                           target_hidden, n_proj, int(train["epochs"]), target_layers)

    # imported here: introspect.explainers.model imports torch, and the sizing arithmetic (introspect.sizing)
    # that uses this module is torch-free until it asks for training jobs
    from introspect.explainers.model import resolve_projection

    def projections(target, explainer, projection, n):
        """Pi_l count as the rules resolve the projection."""
        hidden = models[target]["hidden_size"], models[explainer]["hidden_size"]
        return 0 if resolve_projection(projection, *hidden) == "none" else n

    features = config.get("features") or {}
    explain = features.get("explain") or {}
    tables = [explain] + ([explain["table4"]] if explain.get("table4") else [])
    for table in tables:
        target = table["target"]
        layers = features["targets"][target]["layers"]
        for name, run in table["runs"].items():
            train = {**explain["train"], **run.get("train", {})}
            projection = run.get("projection", train.get("projection", "auto"))
            n_proj = projections(target, run["explainer"], projection, len(layers))
            jobs.append(job("features", name, run["explainer"], train, models[target]["hidden_size"], n_proj,
                            len(layers)))
    for task in ("patching", "hints"):
        section = (config.get(task) or {}).get("explain")
        if not section:
            continue
        for row in section["rows"]:
            if row["variant"] == "untrained":
                continue
            hidden = models[row["target"]]["hidden_size"] if task == "patching" else None
            n_proj = 0
            if task == "patching" and row["variant"] != "no_activation":
                n_proj = projections(row["target"], row["explainer"], section["train"].get("projection", "auto"),
                                     int(config[task].get("n_chunks", 1)))
            name = f"{row['target']}/{row['explainer']}/{row['variant']}"
            jobs.append(job(task, name, row["explainer"], section["train"], hidden, n_proj))
    return jobs
