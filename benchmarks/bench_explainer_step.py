"""Benchmark: an explainer training step (continuous token) vs a plain transformers forward+backward.

    .venv/bin/python benchmarks/bench_explainer_step.py --model resources/models/smollm2-135m
    .venv/bin/python benchmarks/bench_explainer_step.py --task features
    .venv/bin/python benchmarks/bench_explainer_step.py --task features --model resources/models/gemma3-270m \
        --target-hidden 576      # with a Pi_l projection 576 -> 640

Both sides see the same token batch; the explainer additionally writes Pi_l v over the [v] embedding and
computes the per-example loss on the explanation tokens. Steps alternate between the two sides so that
machine noise hits both alike; the median of each is reported.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from introspect.explainers.model import ExplainerSettings, build_explainer, collate, encode
from introspect.models.registry import ModelInfo

QUESTION = ("If feature {vector} at layer 8-15 is added to tokens ' Rome' when processing the text <<<Rome is the "
            "capital of\nRespond with one of France or Spain or Italy or United Kingdom or Egypt or unknown and "
            "nothing else.>>>, how would the output change?")
ANSWER = "The most likely output would change to <<<France>>>."
FEATURE_QUESTION = "{vector} activates at layer 8 for inputs with the following features:"
FEATURE_ANSWER = "fractions, percentages and ratios"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resources/models/smollm2-135m")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--task", choices=["patching", "features"], default="patching",
                        help="which appendix-D question and answer make up the batch")
    parser.add_argument("--target-hidden", type=int, default=None,
                        help="the target's hidden size; when it differs from the model's, a Pi_l projection is used")
    parser.add_argument("--chat", action="store_true", help="put the question through the model's chat template")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    own = ModelInfo.read(args.model).hidden_size
    hidden = args.target_hidden or own
    projection = "none" if hidden == own else "random"
    explainer = build_explainer(args.model, ExplainerSettings(target_hidden=hidden, layers=(1,), projection=projection,
                                                              chat=args.chat))
    explainer.train()
    question, answer = (QUESTION, ANSWER) if args.task == "patching" else (FEATURE_QUESTION, FEATURE_ANSWER)
    item = encode(explainer.tokenizer, question, answer, args.chat)
    batch = collate([item] * args.batch_size, explainer.tokenizer.pad_token_id,
                    torch.randn(args.batch_size, hidden), [1] * args.batch_size)
    lm = explainer.lm

    def plain() -> None:
        out = lm(input_ids=batch.input_ids, attention_mask=batch.attention_mask, labels=batch.labels)
        out.loss.backward()

    def ours() -> None:
        explainer(batch).backward()

    times = {"plain": [], "explainer": []}
    for step in range(args.steps + 1):
        for name, fn in (("plain", plain), ("explainer", ours)):
            lm.zero_grad(set_to_none=True)
            start = time.perf_counter()
            fn()
            if step:  # the first round warms up
                times[name].append(time.perf_counter() - start)
    plain_s, ours_s = statistics.median(times["plain"]), statistics.median(times["explainer"])
    tokens = batch.input_ids.numel()
    print(f"model {args.model}, task {args.task}, projection {projection} ({hidden} -> {own}), batch "
          f"{args.batch_size} x {batch.input_ids.shape[1]} tokens, {args.threads} threads, median of {args.steps} steps")
    print(f"  plain transformers forward+backward  {plain_s:.3f} s/step  {tokens / plain_s:8.0f} tokens/s")
    print(f"  explainer (continuous token)          {ours_s:.3f} s/step  {tokens / ours_s:8.0f} tokens/s")
    print(f"  overhead {100 * (ours_s / plain_s - 1):+.1f}%")


if __name__ == "__main__":
    main()
