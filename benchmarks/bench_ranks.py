"""Benchmark: explainer training on 2 CPU ranks (gloo) vs 1 rank, at the same global batch.

    .venv/bin/python benchmarks/bench_ranks.py --model resources/models/smollm2-135m --steps 6

Both sides train the same feature-description explainer (full tuning) on the same synthetic features for the
same optimiser steps of `--global-batch` examples: one rank with micro-batch global / 2 and grad_accum 2 and
all threads, or two ranks (torchrun) with micro-batch global / 2 and half the threads each. Each side runs at
`--steps` and at 3 x `--steps` optimiser steps, alternating; the difference of the wall times divided by the
extra steps is the time per step without the fixed costs (process start, model loading, saving).
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

from introspect.explainers.distributed import launch
from introspect.explainers.features import train_feature_explainer
from introspect.models.registry import ModelInfo

WORDS = ["cats", "numbers", "the word \"of\"", "cities", "colours", "dates in the past", "legal language"]


def features(n: int, d: int) -> pl.DataFrame:
    rng = np.random.default_rng(0)
    return pl.DataFrame({
        "item_id": [f"f{i}" for i in range(n)], "layer": [8] * n, "feature": list(range(n)),
        "vector": rng.normal(size=(n, d)).astype(np.float32), "label": [WORDS[i % len(WORDS)] for i in range(n)],
        "score": [0.5] * n}, schema_overrides={"vector": pl.Array(pl.Float32, d)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resources/models/smollm2-135m")
    parser.add_argument("--global-batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    hidden = ModelInfo.read(args.model).hidden_size
    micro = args.global_batch // 2
    walls: dict[tuple[int, int], float] = {}
    for steps in (args.steps, 3 * args.steps):
        rows = features(args.global_batch * steps, hidden)
        for ranks, accum in ((1, 2), (2, 1)):  # alternate: machine noise hits both alike
            with tempfile.TemporaryDirectory() as out:
                kwargs = dict(train=rows, model_dir=args.model, out_dir=str(Path(out) / "x"), target_hidden=hidden,
                              projection="none", chat=False, seed=0, device="cpu",
                              settings={"tuning": "full", "lr": 1e-4, "epochs": 1, "batch_size": micro,
                                        "grad_accum": accum})
                start = time.perf_counter()
                losses = launch(train_feature_explainer, kwargs, ranks=ranks, threads=args.threads)
                walls[ranks, steps] = time.perf_counter() - start
            print(f"ranks {ranks} (micro-batch {micro} x grad_accum {accum} x {ranks} = {micro * accum * ranks}): "
                  f"{len(losses)} steps in {walls[ranks, steps]:.1f} s; losses {losses[0]:.3f} .. {losses[-1]:.3f}")
    for ranks in (1, 2):
        per_step = (walls[ranks, 3 * args.steps] - walls[ranks, args.steps]) / (2 * args.steps)
        fixed = walls[ranks, args.steps] - args.steps * per_step
        print(f"ranks {ranks}: {per_step:.2f} s per optimiser step, {fixed:.1f} s fixed (start, load, save)")

if __name__ == "__main__":
    main()
