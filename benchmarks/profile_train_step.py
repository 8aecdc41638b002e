"""Profile: where a real feature-explainer training step spends its time (Table 1's data, not a synthetic batch).

    .venv/bin/python benchmarks/profile_train_step.py --workdir . --run smollm2-full --steps 12

Reads the run's settings from the workflow's config (``--configfile``, default config.yaml in --workdir) and
its training rows from ``results/<target>/features/`` (built by ``snakemake results/<target>/features/train.parquet``),
builds the explainer as the training job does, and runs `--steps` optimiser steps on the run's own first
batches (one warm-up step first). Prints the batch shapes (rows x padded tokens, and how many of those tokens
are padding), the median time of each part of a step (batch assembly, forward, backward, clipping, AdamW) and
the top operators of torch.profiler. Run it with nothing else on the machine.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from pathlib import Path

import torch
import yaml


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default=".", help="the workflow directory holding results/")
    parser.add_argument("--configfile", default=None, help="default: <workdir>/config.yaml")
    parser.add_argument("--run", default="smollm2-full", help="a features.explain.runs name")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
    parser.add_argument("--profile", action="store_true", help="also print torch.profiler's top operators")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from safetensors.torch import load_file

    from introspect.explainers.features import feature_examples
    from introspect.explainers.model import ExplainerSettings, build_explainer, learned_positions
    from introspect.explainers.training import _batches, _fused_adamw, subsample
    from introspect.models.precision import autocast
    from introspect.schemas import read_table
    from introspect.tensorfiles import RowFile

    workdir = Path(args.workdir)
    config = yaml.safe_load(Path(args.configfile or workdir / "config.yaml").read_text())
    explain = config["features"]["explain"]
    run = explain["runs"][args.run]
    train = {**explain["train"], **run.get("train", {})}
    target = explain["target"]
    models = config["models"]
    features = workdir / "results" / target / "features"
    rows = subsample(read_table(features / "train.parquet", "feature_train"), train.get("max_train"), config["seed"])
    hidden = models[target]["hidden_size"]
    projection = run.get("projection", "auto")
    if projection == "auto":
        projection = "none" if models[run["explainer"]]["hidden_size"] == hidden else "random"
    weights = None
    if projection == "pretrained":
        align = run.get("align", "depth")
        source = features / "projections" / align / f"{run['explainer']}.safetensors"
        weights = {int(k): v for k, v in load_file(source).items()}
    torch.manual_seed(config["seed"])
    settings = ExplainerSettings(
        target_hidden=hidden, layers=tuple(sorted(set(rows["layer"].to_list()))), projection=projection,
        chat=bool(explain.get("chat", False)), tuning=train["tuning"],
        **{k: train[k] for k in ("lora_r", "lora_alpha", "lora_dropout", "train_embeddings", "vector_norm",
                                 "projection_tuning") if k in train})
    explainer = build_explainer(workdir / "resources" / "models" / run["explainer"], settings,
                                projection_weights=weights)
    data = feature_examples(rows, explainer.tokenizer, settings.chat, config["seed"],
                            vectors=RowFile(features / "train_vectors.safetensors"))
    explainer.train()
    params = [p for p in explainer.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(params, lr=train["lr"], weight_decay=train.get("weight_decay", 0.01),
                                  fused=_fused_adamw(params))
    batches = _batches(len(data), train["batch_size"], torch.Generator().manual_seed(config["seed"]))
    pad = explainer.tokenizer.pad_token_id
    parts = {k: [] for k in ("batch", "forward", "backward", "clip", "adamw", "step")}
    shapes = []

    def step(index, record: bool) -> None:
        t0 = time.perf_counter()
        batch = data.batch(index, pad)
        t1 = time.perf_counter()
        with autocast(getattr(torch, args.dtype), "cpu"):
            loss = explainer(batch)
        t2 = time.perf_counter()
        loss.backward()
        t3 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        t4 = time.perf_counter()
        optimiser.step()
        optimiser.zero_grad(set_to_none=True)
        t5 = time.perf_counter()
        if record:
            for key, value in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t5 - t0)):
                parts[key].append(value)
            mask = batch.attention_mask
            shapes.append((mask.shape[0], mask.shape[1], int((mask == 0).sum()), len(learned_positions(batch.labels))))

    step(batches[0], False)
    profiler = (torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) if args.profile
                else contextlib.nullcontext())
    with profiler as prof:
        for index in batches[1:1 + args.steps]:
            step(index, True)
    n_params = sum(p.numel() for p in params)
    print(f"run {args.run}: {n_params / 1e6:.1f}M trainable parameters, {args.dtype}, {args.threads} threads")
    tokens = [r * w for r, w, _, _ in shapes]
    print(f"batches: rows x padded width {sorted({(r, w) for r, w, _, _ in shapes})}; padding "
          f"{sum(p for _, _, p, _ in shapes) / sum(tokens):.0%} of {statistics.mean(tokens):.0f} tokens a step; "
          f"logit positions kept {statistics.mean(k for *_, k in shapes):.1f} of {statistics.mean(w for _, w, _, _ in shapes):.1f}")
    for key, values in parts.items():
        print(f"  {key:9s} median {statistics.median(values):.3f} s")
    if args.profile:
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))


if __name__ == "__main__":
    main()
