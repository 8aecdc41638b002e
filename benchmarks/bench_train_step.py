"""Benchmark: one full explainer optimiser step (forward, backward, AdamW) as training runs it, by precision,
optimiser kernel and embedding training.

    .venv/bin/python benchmarks/bench_train_step.py --model resources/models/smollm2-135m
    .venv/bin/python benchmarks/bench_train_step.py --model resources/models/gemma3-270m --target-hidden 576

A batch of 16 appendix-D feature questions with a short description (25 tokens a row, as Table 1's), the
projection and the layers of Table 1's runs. The variants alternate step by step, so that machine noise hits
them alike; the median of `--steps` steps after one warm-up step each is reported, with the optimiser's part.
Run it with nothing else on the machine: two processes on two cores slow each other down many times over.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time

import torch

from introspect.explainers.model import ExplainerSettings, build_explainer, collate, encode
from introspect.models.precision import autocast
from introspect.models.registry import ModelInfo

QUESTION = "{vector} activates at layer 8 for inputs with the following features:"
ANSWER = 'the word "canonical" in docstrings'


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resources/models/smollm2-135m")
    parser.add_argument("--target-hidden", type=int, default=None, help="a Pi_l projection from this size")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    own = ModelInfo.read(args.model).hidden_size
    hidden = args.target_hidden or own
    variants = {}
    for train_embeddings in (False, True):
        torch.manual_seed(0)
        explainer = build_explainer(args.model, ExplainerSettings(
            target_hidden=hidden, layers=(8,), projection="none" if hidden == own else "random", chat=False,
            tuning="full", train_embeddings=train_embeddings))
        explainer.train()
        item = encode(explainer.tokenizer, QUESTION, ANSWER, False)
        batch = collate([item] * args.batch_size, explainer.tokenizer.pad_token_id,
                        torch.randn(args.batch_size, hidden), [8] * args.batch_size)
        params = [p for p in explainer.parameters() if p.requires_grad]
        for dtype, fused in itertools.product((torch.float32, torch.bfloat16), (False, True)):
            optimiser = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.01, fused=fused, foreach=not fused)
            name = (f"{str(dtype).removeprefix('torch.'):8s} {'fused' if fused else 'foreach':7s} "
                    f"embeddings {'trained' if train_embeddings else 'frozen'}")
            variants[name] = (explainer, batch, optimiser, dtype, sum(p.numel() for p in params))
    times = {name: [] for name in variants}

    def step(explainer, batch, optimiser, dtype) -> float:
        with autocast(dtype, "cpu"):
            loss = explainer(batch)
        loss.backward()
        start = time.perf_counter()
        optimiser.step()
        optimiser.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    for repeat in range(args.steps + 1):
        for name, (explainer, batch, optimiser, dtype, _) in variants.items():
            start = time.perf_counter()
            opt = step(explainer, batch, optimiser, dtype)
            if repeat:
                times[name].append((time.perf_counter() - start, opt))
    shape = next(iter(variants.values()))[1].input_ids.shape
    print(f"model {args.model}, batch {shape[0]} x {shape[1]} tokens, {args.threads} threads, median of "
          f"{args.steps} steps")
    print("| variant | trainable parameters | step s | of which AdamW s |")
    print("|---|---|---|---|")
    for name, values in times.items():
        total = statistics.median(t for t, _ in values)
        opt = statistics.median(o for _, o in values)
        print(f"| {name} | {variants[name][4]:,} | {total:.3f} | {opt:.3f} |")


if __name__ == "__main__":
    main()
