"""Benchmark: the batched patching sweep vs one forward pass per intervention, on the same interventions.

    .venv/bin/python benchmarks/bench_patching.py --model resources/models/smollm2-135m --n 256

Each mode runs in its own process so that its peak resident memory (ru_maxrss) is its own. Both modes use
the project's Patcher; the loop mode is what a direct implementation does: for every intervention, one
nnsight trace over the whole prompt (batch size 1, no shared-prefix cache). The outcomes must agree.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

FORMAT = "{statement}\nRespond with one of {options} and nothing else."


def interventions(model_dir: str, n: int):
    import torch

    from introspect.sources.facts import builtin_facts, make_pairs
    from introspect.models.loading import load_model
    from introspect.groundtruth.patching import Intervention, Patcher, build_prompt, common_prefix_length, layer_chunks

    model, tok, info = load_model(model_dir)
    torch.set_num_threads(2)
    patcher = Patcher(model, tok)
    chunks = layer_chunks(info.n_layers, 4)
    pairs = make_pairs(builtin_facts(), 64, seed=0)
    ids, ivs = [], []
    for pair in pairs:
        opts = tuple(pair.options) + ("unknown",)
        x, xc = [tok(build_prompt(f.subject, f.template, opts, FORMAT, tok, True).text, add_special_tokens=False).input_ids
                 for f in (pair.original, pair.counterfactual)]
        ids.append(x)
        states = patcher.hidden_states([xc])[0]
        shared, delta = common_prefix_length([x, xc]), len(xc) - len(x)
        for t in range(shared, len(x)):
            if t + delta >= shared:
                for chunk in chunks:
                    ivs.append(Intervention(len(ids) - 1, t, chunk, states[list(chunk), t + delta].mean(0)))
        if len(ivs) >= n:
            break
    return patcher, ids, ivs[:n]


def run(mode: str, model_dir: str, n: int, batch_size: int) -> dict:
    patcher, ids, ivs = interventions(model_dir, n)
    start = time.perf_counter()
    if mode == "batched":
        _, out = patcher.patched_next_tokens(ids, ivs, batch_size=batch_size, unpatched=False)
    else:
        out = []
        for iv in ivs:
            out += patcher.patched_next_tokens([ids[iv.prompt]], [iv.__class__(0, iv.position, iv.layers, iv.vector)],
                                               batch_size=1, prefix_len=0, unpatched=False)[1]
    seconds = time.perf_counter() - start
    return {"mode": mode, "interventions": len(ivs), "seconds": seconds, "per_second": len(ivs) / seconds,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "outcomes": out}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resources/models/smollm2-135m")
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--mode", choices=["batched", "loop"])
    args = parser.parse_args()
    if args.mode:  # child process
        print(json.dumps(run(args.mode, args.model, args.n, args.batch_size)))
        return
    results = {}
    for mode in ("loop", "batched"):
        out = subprocess.run([sys.executable, __file__, "--mode", mode, "--model", args.model, "--n", str(args.n),
                              "--batch-size", str(args.batch_size)], capture_output=True, text=True, check=True)
        results[mode] = json.loads(out.stdout.strip().splitlines()[-1])
    assert results["loop"]["outcomes"] == results["batched"]["outcomes"], "batched and loop outcomes differ"
    speedup = results["batched"]["per_second"] / results["loop"]["per_second"]
    print(f"model {Path(args.model).name}, {results['batched']['interventions']} interventions, "
          f"batch size {args.batch_size}")
    for mode in ("loop", "batched"):
        r = results[mode]
        print(f"  {mode:8s} {r['per_second']:8.1f} interventions/s  ({r['seconds']:.1f} s)  "
              f"peak RSS {r['peak_rss_mb']:.0f} MB")
    print(f"  speed-up {speedup:.1f}x; outcomes identical")


if __name__ == "__main__":
    main()
