"""Benchmark: activation caching (hooks, stopped after the layer) vs a plain transformers no-grad forward.

    .venv/bin/python benchmarks/bench_activations.py --model resources/models/smollm2-135m --layer 16

Both sides run the same batches of the builtin corpus (same padding, same order). The plain side is
``model(input_ids, attention_mask, output_hidden_states=True)`` under ``torch.no_grad()``, which runs every
layer; the cache side is ``introspect.groundtruth.activations.layer_outputs``, which hooks the requested layer and stops
the forward there. Reported: tokens/s of each, for the requested layer and for the last layer (where nothing
is skipped, so the ratio shows the hooks' own overhead). Repetitions alternate the two sides; medians.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from introspect.groundtruth.activations import bos_prefix, layer_outputs, pad_id, right_pad, sequences, tokenize_corpus
from introspect.sources.corpus import build_corpus, builtin_documents
from introspect.models.loading import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resources/models/smollm2-135m")
    parser.add_argument("--layer", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=4096)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, tokenizer, _ = load_model(args.model)
    corpus = build_corpus(builtin_documents(), 0.2, 0)
    tokens = tokenize_corpus(corpus, tokenizer, args.seq_len, args.tokens)
    seqs = sequences(tokens, bos_prefix(tokenizer))
    n_tokens = sum(len(s) for s in seqs)
    pad = pad_id(tokenizer)
    n_layers = model.config.get_text_config().num_hidden_layers

    def plain() -> None:
        order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
        with torch.no_grad():
            for start in range(0, len(order), args.batch_size):
                batch, mask = right_pad([seqs[i] for i in order[start:start + args.batch_size]], pad)
                model(input_ids=batch, attention_mask=mask, output_hidden_states=True, use_cache=False)

    def cached(layer: int):
        return lambda: layer_outputs(model, seqs, [layer], args.batch_size, pad, progress=False)

    def timed(fn) -> float:
        started = time.perf_counter()
        fn()
        return time.perf_counter() - started

    timed(cached(args.layer))  # warm-up
    sides = {"plain forward (all layers)": plain, f"cache layer {args.layer}": cached(args.layer),
             f"cache layer {n_layers - 1} (last)": cached(n_layers - 1)}
    results = {name: [] for name in sides}
    for _ in range(args.repeats):
        for name, fn in sides.items():
            results[name].append(timed(fn))
    base = statistics.median(results["plain forward (all layers)"])
    print(f"model {args.model}, {len(seqs)} sequences, {n_tokens} tokens, batch {args.batch_size}, "
          f"{args.threads} threads, median of {args.repeats}")
    for name, times in results.items():
        median = statistics.median(times)
        print(f"{name:32s} {n_tokens / median:8.0f} tokens/s  ({base / median:.2f}x plain)")


if __name__ == "__main__":
    main()
