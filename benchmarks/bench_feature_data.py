"""Benchmark: the feature data stages at the paper's shapes — split, nearest-neighbour search, training loader.

    .venv/bin/python benchmarks/bench_feature_data.py --n 100000 300000 1000000 --dir /tmp/bench_features

Synthetic features shaped like LlamaScope's on Llama-3.1-8B (d = 4096, spread over 8 layers): per layer an SAE
table (feature_vectors, float32 unit vectors, as features_sae writes it), a labels table and an exemplars table.
Each stage then runs in its own process, so that its peak resident memory (ru_maxrss of the child) is its own:

- split:  introspect.groundtruth.evalsets.split_feature_files (n_test per layer held out; the training
          vectors streamed to a float16 row file) and the train/test tables written;
- nn:     introspect.explainers.baselines.nearest_neighbour, NN-all and NN-layer, of the held-out items over
          the whole training bank;
- loader: one epoch of explainer batches as the training loop draws them (random order, micro-batch 16:
          vectors read from the row file, prompts and labels encoded) with SmolLM2's tokenizer.

Inputs are generated a chunk at a time (not timed) and removed after each N. Needs about 22 GB of free disk at
N = 1M (16 GB of float32 SAE tables, 8 GB of float16 training vectors). `--budget-mb` is compute.memory_budget_mb.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
WIDTH = 4096
LAYERS = 8
WORDS = ["cats", "numbers", "the word \"of\"", "cities", "colours", "dates in the past", "legal language",
         "closing brackets in code", "names of rivers", "verbs of motion"]


def generate(folder: Path, n: int, n_test: int) -> None:
    """Per-layer SAE, labels and exemplar tables for n features over LAYERS layers."""
    import polars as pl
    import pyarrow as pa
    import pyarrow.parquet as pq

    from introspect import schemas
    from introspect.schemas import write_table

    folder.mkdir(parents=True, exist_ok=True)
    per_layer = n // LAYERS
    rng = np.random.default_rng(0)
    group = max(1024, schemas.ROW_GROUP_BYTES // (4 * WIDTH))
    for layer in range(LAYERS):
        ids = np.arange(per_layer, dtype=np.int64)
        vector_type = pa.list_(pa.float32(), WIDTH)
        schema = pa.schema([("layer", pa.int64()), ("feature", pa.int64()), ("vector", vector_type)])
        with pq.ParquetWriter(folder / f"sae{layer}.parquet", schema, compression="zstd") as out:
            for start in range(0, per_layer, group):
                rows = min(group, per_layer - start)
                v = rng.standard_normal((rows, WIDTH), dtype=np.float32)
                v /= np.linalg.norm(v, axis=1, keepdims=True)
                out.write_table(pa.table({
                    "layer": pa.array(np.full(rows, layer, dtype=np.int64)),
                    "feature": pa.array(ids[start:start + rows]),
                    "vector": pa.FixedSizeListArray.from_arrays(pa.array(v.reshape(-1)), WIDTH)}, schema=schema))
        labels = pl.DataFrame({
            "layer": np.full(per_layer, layer, dtype=np.int64), "feature": ids,
            "label": [WORDS[i % len(WORDS)] + f" {i % 97}" for i in range(per_layer)],
            "score": rng.random(per_layer), "check_score": rng.random(per_layer),
            "random_candidate": [None] * per_layer, "random_score": [None] * per_layer,
            "random_check_score": [None] * per_layer, "candidates": [["x"]] * per_layer,
            "candidate_scores": [[0.5]] * per_layer}, schema=schemas.FEATURE_LABELS)
        write_table(labels, folder / f"labels{layer}.parquet", "feature_labels")
        # exemplars of the features the simulator could score (a few windows each, as at paper scale)
        with_exemplars = ids[: max(n_test * 4, per_layer // 2)]
        k = len(with_exemplars)
        exemplars = pl.DataFrame({
            "layer": np.full(k, layer, dtype=np.int64), "feature": with_exemplars, "max_activation": np.ones(k),
            "windows": [[0, 1]] * k, "kinds": [["top", "random"]] * k, "activations": [[[1.0] * 4, [0.0] * 4]] * k},
            schema=schemas.FEATURE_EXEMPLARS)
        write_table(exemplars, folder / f"exemplars{layer}.parquet", "feature_exemplars")


def files(folder: Path):
    from introspect.groundtruth.evalsets import LayerFiles

    return [LayerFiles(folder / f"labels{l}.parquet", folder / f"sae{l}.parquet", folder / f"exemplars{l}.parquet")
            for l in range(LAYERS)]


def stage_split(folder: Path, n_test: int, budget_mb: int) -> dict:
    from introspect.groundtruth.evalsets import split_feature_files
    from introspect.schemas import write_table

    train, test = split_feature_files(files(folder), n_test, 0, folder / "train_vectors.safetensors",
                                      budget_mb=budget_mb, progress=False)
    write_table(train, folder / "train.parquet", "feature_train")
    write_table(test, folder / "sae_eval.parquet", "feature_eval")
    return {"train": train.height, "test": test.height}


def stage_nn(folder: Path, budget_mb: int) -> dict:
    from introspect.explainers.baselines import nearest_neighbour
    from introspect.schemas import read_table
    from introspect.tensorfiles import RowFile

    train = read_table(folder / "train.parquet", "feature_train")
    items = read_table(folder / "sae_eval.parquet", "feature_eval")
    bank = RowFile(folder / "train_vectors.safetensors")
    found = {}
    for name, per_layer in (("nn_all", False), ("nn_layer", True)):
        started = time.perf_counter()
        nearest_neighbour(train, bank, items, per_layer=per_layer, budget_mb=budget_mb)
        found[f"{name}_s"] = round(time.perf_counter() - started, 2)
    return {"queries": items.height, **found}


def stage_loader(folder: Path, tokenizer_dir: str, batch_size: int) -> dict:
    import torch
    from transformers import AutoTokenizer

    from introspect.explainers.features import feature_examples
    from introspect.explainers.model import add_vector_tokens
    from introspect.schemas import read_table
    from introspect.tensorfiles import RowFile

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    add_vector_tokens(tokenizer)
    train = read_table(folder / "train.parquet", "feature_train")
    data = feature_examples(train, tokenizer, chat=False, seed=0, vectors=RowFile(folder / "train_vectors.safetensors"))
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(0)).tolist()
    tokens = 0
    for start in range(0, len(order), batch_size):
        batch = data.batch(order[start:start + batch_size], tokenizer.pad_token_id)
        tokens += int(batch.attention_mask.sum())
    return {"examples": len(data), "batches": -(-len(data) // batch_size), "tokens": tokens}


def run_stage(args: list[str]) -> tuple[float, float, dict]:
    """Run one stage in a child process: (wall seconds, the child's peak RSS in MB, the stage's own report)."""
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, __file__, "--stage", *args], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(HERE.parent / "lib")})
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage (ru_maxrss in KB)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"stage {args[0]} failed with exit code {proc.returncode}")
    return time.perf_counter() - started, usage.ru_maxrss / 1024, json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[100_000, 300_000, 1_000_000])
    parser.add_argument("--dir", default="/tmp/bench_features")
    parser.add_argument("--n-test", type=int, default=125, help="held-out features per layer (NN queries)")
    parser.add_argument("--budget-mb", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--tokenizer", default="resources/tokenizers/smollm2-135m")
    parser.add_argument("--stage", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage:  # a child: one stage, its report as the last line of stdout
        name, folder = args.stage[0], Path(args.stage[1])
        report = {"split": lambda: stage_split(folder, args.n_test, args.budget_mb),
                  "nn": lambda: stage_nn(folder, args.budget_mb),
                  "loader": lambda: stage_loader(folder, args.tokenizer, args.batch_size)}[name]()
        print(json.dumps(report))
        return
    print("| N | stage | wall s | peak RSS MB | s per 100k | report |")
    print("|---:|---|---:|---:|---:|---|")
    for n in args.n:
        folder = Path(args.dir) / f"n{n}"
        shutil.rmtree(folder, ignore_errors=True)
        started = time.perf_counter()
        generate(folder, n, args.n_test)
        print(f"<!-- N={n}: inputs generated in {time.perf_counter() - started:.0f} s -->", flush=True)
        for stage in ("split", "nn", "loader"):
            wall, rss, report = run_stage([stage, str(folder), "--n-test", str(args.n_test), "--budget-mb",
                                           str(args.budget_mb), "--batch-size", str(args.batch_size),
                                           "--tokenizer", args.tokenizer])
            print(f"| {n:,} | {stage} | {wall:.1f} | {rss:.0f} | {wall / n * 1e5:.2f} | {json.dumps(report)} |",
                  flush=True)
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
