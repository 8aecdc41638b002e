"""Print the per-GPU memory, GPU-hours and job resources of every explainer training job of a config (Markdown).

    .venv/bin/python tools/training_memory.py configs/paper.yaml

The arithmetic is introspect.explainers.memory's (its docstring states it). GPU-hours assume 40% of an
H100's dense bf16 peak (~400 TFLOP/s per GPU) and 6 P FLOPs per trained token for full tuning, 4 P for LoRA
(no weight gradients of the frozen base), plus 2 P for the recomputation of gradient checkpointing. Example
counts (introspect.sizing.Sizer.training_rows): features = the labelled training pool, every SAE feature of the
target's layers minus the held-out ones (an upper bound: not every feature has a Neuronpedia label), capped by
train.max_train; patching = patching.balance.max_per_cell x n_chunks x 4 balanced cells per chunk; hints = the
questions' train share (the balanced splits' sizes are only known after the data stages ran). The last columns
are the SLURM job the workflow submits for the run (introspect.sizing): GPUs (= ranks), host memory and wall
time = GPU-hours / GPUs (+ loading and saving the weights, start-up) x 1.5, + the 10 minutes SLURM's SIGTERM
comes before the limit.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))

from introspect.explainers.memory import GB, gpu_hours, per_gpu_bytes, shape_of, trained_params, training_jobs  # noqa: E402
from introspect.sizing import Sizer  # noqa: E402


def hours_text(hours: float) -> str:
    return f"{hours:,.0f}" if hours >= 10 else f"{hours:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config")
    parser.add_argument("--rows", type=int, default=None, help="train rows of a patching or hint dataset "
                        "(default: introspect.sizing's estimate from the config)")
    parser.add_argument("--gpu-gb", type=float, default=80.0)
    args = parser.parse_args()
    config = yaml.safe_load(Path(args.config).read_text())
    root = Path(args.config).resolve().parents[1] if Path(args.config).parent.name == "configs" else Path(".")
    sizer = Sizer(config, root)
    print(f"| task | run | explainer | tuning | GPUs | batch (per GPU x GPUs) | weights | grads | AdamW | "
          f"activations (ckpt / none) | logits | per GPU (ckpt / none) | of {args.gpu_gb:.0f} GB | train rows | "
          "GPU-hours | job: host memory | job: runtime |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---:|---:|---:|---:|")
    for job in training_jobs(config, root):
        shape = shape_of(config["models"][job.explainer])
        on, off = per_gpu_bytes(job, shape, True), per_gpu_bytes(job, shape, False)
        rows = args.rows if args.rows is not None and job.task != "features" else sizer.training_rows(job)
        resources = sizer.training(job, sizer.models[job.explainer], rows)
        g = lambda v: f"{v / GB:.1f}"  # noqa: E731
        print(f"| {job.task} | {job.name} | {job.explainer} | {job.tuning} (trains {trained_params(job, shape) / 1e9:.2f}B) "
              f"| {job.gpus} | {job.batch_size} x {job.gpus} = {job.global_batch} | {g(on['weights'])} | "
              f"{g(on['gradients'])} | {g(on['optimiser'])} | {g(on['activations'])} / {g(off['activations'])} | "
              f"{g(on['logits'])} | **{g(on['total'])}** / {g(off['total'])} | {100 * on['total'] / (args.gpu_gb * GB):.0f}% | "
              f"{rows:,} | {hours_text(gpu_hours(job, shape, rows))} | {resources.mem_mb / 1000:,.0f} GB | "
              f"{resources.runtime / 60:,.1f} h |")


if __name__ == "__main__":
    main()
