"""How many counterfactual pairs each patching target answers, with the config's prompts (no patching).

Used to set config.yaml's patching.n_pairs and prompt (docs/results.md, Patching prompt format):

    .venv/bin/python -u tools/measure_patching_answers.py --configfile config.yaml --n-pairs 600 --out out.json

It draws the pairs as the workflow's patching_pairs rule does (patching.facts, n_options, the config's seed),
runs every pair's x and x' unpatched in the target's prompt, exactly as the sweep does before it patches
(introspect.groundtruth.patching.answer_pairs), and prints per target: the share of pairs whose x is
answered, the pairs kept (x and x' both answered: the ones the sweep patches) among the first N pairs for
several N (pairs are drawn round-robin over relations, so the first N of a larger draw are the pairs of
n_pairs = N), and how many (position x layer block) interventions the kept pairs would get, per token type
(appendix E.2 types; other tokens counted together). Models are read from resources/models/<target>
(`.venv/bin/snakemake --cores 1 models` materialises them). --target, --prompt-format and --prefix
measure one target or another prompt without editing the config.
"""

from __future__ import annotations

import argparse
import collections
import json
import time

import torch
import yaml

from introspect.groundtruth.patching import (
    Patcher,
    SweepSettings,
    answer_pairs,
    layer_chunks,
    patched_positions,
    token_types,
)
from introspect.models.loading import load_model
from introspect.schemas import TOKEN_TYPES
from introspect.sources.facts import load_facts, make_pairs


def merged(paths):
    """The configs merged in order as Snakemake merges --configfile files (nested keys merge, later wins)."""
    def merge(a, b):
        out = dict(a)
        for key, value in b.items():
            out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
        return out

    config = {}
    for path in paths:
        with open(path) as f:
            config = merge(config, yaml.safe_load(f) or {})
    return config


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configfile", nargs="+", default=["config.yaml"])
    parser.add_argument("--target", action="append", help="a patching target (default: all of the config's)")
    parser.add_argument("--n-pairs", type=int, help="pairs to draw (default: patching.n_pairs)")
    parser.add_argument("--prompt-format", help="instead of each target's prompt_format")
    parser.add_argument("--prefix", help="instead of each target's prefix")
    parser.add_argument("--models", default="resources/models")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", help="write the figures as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    config = merged(args.configfile)
    section = config["patching"]
    n_pairs = args.n_pairs or section["n_pairs"]
    facts = load_facts(**section["facts"])
    pairs = make_pairs(facts, n_pairs, seed=config["seed"], n_options=section["n_options"])
    print(f"{len(facts)} facts -> {len(pairs)} pairs (seed {config['seed']})", flush=True)
    results = {}
    for target in args.target or list(section["targets"]):
        entry = section["targets"][target]
        settings = SweepSettings(
            prompt_format=args.prompt_format if args.prompt_format is not None else entry["prompt_format"],
            chat=entry["chat"], chunks=(), batch_size=section["batch_size"],
            unknown_option=section.get("unknown_option", "unknown"), require_correct=True,
            prefix=args.prefix if args.prefix is not None else entry.get("prefix", ""),
        )
        start = time.time()
        model, tokenizer, _ = load_model(f"{args.models}/{target}")
        n_layers = model.config.get_text_config().num_hidden_layers
        n_chunks = len(entry["chunks"]) if "chunks" in entry else len(layer_chunks(n_layers, section["n_chunks"]))
        run = answer_pairs(pairs, Patcher(model, tokenizer), tokenizer, settings)
        x_answered = sum(ok_x for ok_x, _ in run.answered)
        checkpoints = sorted({n for n in (100, 200, 300, 400, 500, 600, 800, 1000) if n < len(pairs)} | {len(pairs)})
        kept_at = {n: sum(1 for k in run.kept if k < n) for n in checkpoints}
        by_type = collections.Counter()
        for k in run.kept:
            x, xc = run.ids[2 * k], run.ids[2 * k + 1]
            tokens = [tokenizer.decode([t]) for t in x]
            types = token_types(run.prompts[2 * k], run.encodings[2 * k].offset_mapping, tokens,
                                pairs[k].original.object, pairs[k].counterfactual.object)
            for t, _ in patched_positions(x, xc):
                by_type[types[t] if types[t] in TOKEN_TYPES else "other tokens"] += n_chunks
        results[target] = {
            "pairs": len(pairs), "x_answered": x_answered, "kept": len(run.kept), "kept_among_first": kept_at,
            "interventions": sum(by_type.values()), "interventions_by_type": dict(by_type),
            "example": run.prompts[0].text, "seconds": round(time.time() - start, 1),
        }
        print(f"{target}: x answered {x_answered}/{len(pairs)} ({100 * x_answered / len(pairs):.1f}%), "
              f"kept (x and x' answered) {len(run.kept)} ({100 * len(run.kept) / len(pairs):.1f}%), "
              f"{results[target]['seconds']} s", flush=True)
        print("   kept among the first N pairs:", ", ".join(f"{n}: {v}" for n, v in kept_at.items()))
        print(f"   interventions of the kept pairs ({n_chunks} layer blocks): {sum(by_type.values())}:",
              ", ".join(f"{t} {by_type[t]}" for t in (*TOKEN_TYPES, "other tokens")))
        print("   first prompt:", repr(run.prompts[0].text[-200:]), flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
