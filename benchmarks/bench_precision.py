"""Benchmark: float32 vs bfloat16 on the real target, stage by stage: wall time and whether the results agree.

    .venv/bin/python benchmarks/bench_precision.py --model resources/models/smollm2-135m
    .venv/bin/python benchmarks/bench_precision.py --quick          # smaller sizes, one repeat

Both precisions are loaded once (``introspect.models.loading.load_model(..., dtype=torch.float32 / bfloat16)``)
and every timed stage alternates the two sides (fp32, bf16, fp32, bf16, ...) so that machine noise hits both
alike; the table reports the median of each side and the speed-up (fp32 time / bf16 time). Stages, with the
default config's settings (config.yaml) wherever the workflow has them:

1. activation cache: ``cache_layer`` over the first ``--tokens`` tokens of the builtin corpus (seq_len 128,
   batch 16); accuracy = ||h_bf16 - h_fp32||_F / ||h_fp32||_F over ``usable_rows`` and the per-token cosine.
2. SAE: ``sae_for_layer`` with ``features.sae`` (TopK; training itself runs in float32 either way) on the
   float32 and on the bfloat16 cache; accuracy = the two eval-split FVUs (goal: within 0.01).
3. patching sweep: ``patch_sweep`` with the smollm2-135m settings of ``patching`` on the first ``--pairs`` pairs
   the ``patching_pairs`` rule draws; accuracy = agreement of the top-1 outcomes per (pair, position, chunk)
   (goal: >= 99%, interventions of a pair only one side keeps counting as disagreements). Disagreements are
   re-run for their logits: how far apart the two candidate tokens are.
4. hints: ``run_hints`` with the ``hints`` settings on the first ``--hint-questions`` of the builtin questions
   (the rows and hint letters the workflow uses); accuracy = agreement of answer_plain / answer_hinted.
   Stages 3 and 4 also run a third side, bf16 weights with the LM head in float32 (``Float32Head``; skip it
   with ``--no-head32``): bf16 logits are multiples of 0.125 at |logit| 16-32, so near-ties become exact ties.
5. training step: the feature explainer (features.explain.train: full tuning, frozen embeddings, vector_norm
   embedding), forward+backward in float32 vs under bfloat16 autocast over float32 weights, batch 8; two
   identical copies take the same AdamW steps, and their losses are compared.
6. GEMM: a 2048^3 matmul in each dtype (GFLOP/s), and the FLOP/s of stages 1 and 5 as a share of it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

FEATURE_LABELS = ("fractions, percentages and ratios", "the names of European capital cities",
                  "closing parentheses in Python code", "verbs in the past tense", "numbers written as words",
                  "the word 'the' at the start of a sentence", "function arguments and keyword names",
                  "dates and years")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def timed(fn):
    started = time.perf_counter()
    out = fn()
    return time.perf_counter() - started, out


def alternate(sides: dict, repeats: int, what: str) -> tuple[dict, dict]:
    """Run each side `repeats` times, alternating; returns ({side: [seconds]}, {side: last result})."""
    times, results = {name: [] for name in sides}, {}
    for r in range(repeats):
        for name, fn in sides.items():
            seconds, results[name] = timed(fn)
            times[name].append(seconds)
            log(f"{what}: {name} repeat {r + 1}/{repeats} {seconds:.1f} s")
    return times, results


def pct(x: float) -> str:
    return f"{100 * x:.2f}%"


class Table:
    def __init__(self):
        self.rows = []

    def add(self, stage, size, times32, times16, accuracy, goal="", met=""):
        m32 = statistics.median(times32) if times32 else None
        m16 = statistics.median(times16) if times16 else None
        ratio = f"{m32 / m16:.2f}x" if m32 and m16 else ""
        fmt = lambda m, ts: "" if m is None else f"{m:.2f}" + (  # noqa: E731
            f" ({', '.join(f'{t:.1f}' for t in ts)})" if len(ts) > 1 else "")
        self.rows.append((stage, size, fmt(m32, times32), fmt(m16, times16), ratio, accuracy, goal, met))

    def markdown(self) -> str:
        head = ("stage", "size", "fp32 s (runs)", "bf16 s (runs)", "speed-up", "accuracy bf16 vs fp32", "goal", "met")
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in self.rows]
        return "\n".join(lines)


def block_params(model, upto: int | None = None) -> int:
    """Parameters of decoder blocks 0..upto (all blocks when None): the matmul weights a token passes through."""
    from introspect.groundtruth.activations import decoder_layers

    blocks = decoder_layers(model)
    blocks = blocks if upto is None else blocks[: upto + 1]
    return sum(p.numel() for b in blocks for p in b.parameters())


# --------------------------------------------------------------------------- 1 + 2: activations and SAE
def stage_activations(models, tokenizer, args, cfg, table, flops, out):
    from introspect.groundtruth.activations import cache_layer, tokenize_corpus, usable_rows
    from introspect.groundtruth.sae import fvu, sae_for_layer
    from introspect.sources.corpus import build_corpus, builtin_documents

    fc = cfg["features"]
    corpus = build_corpus(builtin_documents(), fc["corpus"]["eval_fraction"], cfg["seed"],
                          max_doc_words=fc["corpus"].get("max_doc_words"))
    tokens = tokenize_corpus(corpus, tokenizer, fc["activations"]["seq_len"], args.tokens)
    rows = torch.from_numpy(usable_rows(tokens))
    n_seq = tokens["seq_id"].n_unique()
    n_model_tokens = tokens.height  # no BOS for SmolLM2; sequences(...) adds it where a tokenizer has one
    n_eval = len(usable_rows(tokens, "eval"))
    log(f"corpus: {tokens.height} tokens, {n_seq} sequences, {n_eval} usable eval tokens")
    batch = fc["activations"]["batch_size"]
    sae_cfg = dict(fc["sae"])
    if args.sae_epochs:
        sae_cfg["epochs"] = args.sae_epochs
    for layer in args.layers:
        sides = {name: (lambda m=m: cache_layer(m, tokenizer, tokens, layer, batch_size=batch, progress=False))
                 for name, m in models.items()}
        times, caches = alternate(sides, args.repeats, f"cache layer {layer}")
        h32 = caches["fp32"]["hidden"][rows].float()
        h16 = caches["bf16"]["hidden"][rows].float()
        rel = float((h16 - h32).norm() / h32.norm())
        cos = torch.nn.functional.cosine_similarity(h16, h32, dim=1)
        acc = (f"rel. error {rel:.4f}; cosine median {cos.median():.5f}, min {cos.min():.4f}")
        table.add(f"1. activation cache, layer {layer}",
                  f"{tokens.height} tokens, {n_seq} seqs x <= 128, batch {batch}",
                  times["fp32"], times["bf16"], acc, "report", "")
        out[f"cache_layer{layer}"] = {"times": times, "rel_error": rel, "cos_median": float(cos.median()),
                                      "cos_min": float(cos.min()), "cos_p01": float(cos.quantile(0.01))}
        n_params = block_params(models["fp32"], layer)
        for name in models:
            flops[f"forward, cache layer {layer} ({name})"] = (2 * n_params * n_model_tokens,
                                                               statistics.median(times[name]), name)
        # 2. the SAE of this layer on each cache (the trainer computes in float32 whatever the cache's origin)
        with tempfile.TemporaryDirectory() as scratch:
            sides = {name: (lambda c=caches[name]: sae_for_layer(sae_cfg, c["hidden"], tokens, layer, cfg["seed"],
                                                                 scratch, progress=False))
                     for name in models}
            stimes, saes = alternate(sides, 1, f"SAE layer {layer}")
        f32, f16 = saes["fp32"][1]["fvu"], saes["bf16"][1]["fvu"]
        eval_rows = torch.from_numpy(usable_rows(tokens, "eval"))
        cross = fvu(saes["fp32"][0], caches["bf16"]["hidden"][eval_rows])
        diff = f16 - f32
        acc = (f"FVU fp32-cache {f32:.4f}, bf16-cache {f16:.4f} (diff {diff:+.4f}); fp32 SAE on bf16 eval "
               f"{cross:.4f}; L0 {saes['fp32'][1]['l0']:.1f}/{saes['bf16'][1]['l0']:.1f}")
        table.add(f"2. TopK SAE, layer {layer}",
                  f"{saes['fp32'][1]['train_tokens']} train / {saes['fp32'][1]['eval_tokens']} eval tokens, "
                  f"{sae_cfg['expansion']}x, k {sae_cfg['k']}, {sae_cfg['epochs']} epochs (trainer fp32 on both sides)",
                  stimes["fp32"], stimes["bf16"], acc, "|diff| <= 0.01", "yes" if abs(diff) <= 0.01 else "NO")
        out[f"sae_layer{layer}"] = {"times": stimes, "fvu_fp32": f32, "fvu_bf16": f16, "fvu_fp32_sae_on_bf16": cross,
                                    "stats_fp32": saes["fp32"][1], "stats_bf16": saes["bf16"][1]}
        del caches, saes


# --------------------------------------------------------------------------- 3: patching sweep
HEAD32 = "bf16+f32head"  # bf16 weights, the LM head (vocabulary projection) in float32: see Float32Head


class Float32Head(torch.nn.Module):
    """The LM head computed in float32 from bf16 hidden states (a float32 copy of the tied weight).

    bfloat16 logits have 8 significant bits: around |logit| 16-32 they are multiples of 0.125, so candidates
    closer than that become exact ties, which argmax breaks towards the lower token id / letter."""

    def __init__(self, head: torch.nn.Linear):
        super().__init__()
        self.weight = torch.nn.Parameter(head.weight.detach().float().clone(), requires_grad=False)

    def forward(self, x):
        return torch.nn.functional.linear(x.float(), self.weight)


def sweep_settings(cfg, n_layers: int):
    from introspect.groundtruth.patching import SweepSettings, layer_chunks

    pc = cfg["patching"]
    target = pc["targets"]["smollm2-135m"]
    chunks = target.get("chunks") or layer_chunks(n_layers, pc["n_chunks"])
    return SweepSettings(prompt_format=target["prompt_format"], chat=target["chat"],
                         chunks=tuple(map(tuple, chunks)), batch_size=pc["batch_size"],
                         unknown_option=pc.get("unknown_option", "unknown"),
                         require_correct=pc.get("require_correct", True), prefix=target.get("prefix", ""))


def sweep_prompt_ids(pairs, tokenizer, settings) -> list[list[int]]:
    """The token ids patch_sweep builds: original then counterfactual prompt of every pair."""
    from introspect.groundtruth.patching import build_prompt

    ids = []
    for pair in pairs:
        options = tuple(pair.options) + ((settings.unknown_option,) if settings.unknown_option else ())
        for fact in (pair.original, pair.counterfactual):
            prompt = build_prompt(fact.subject, fact.template, options, settings.prompt_format, tokenizer,
                                  settings.chat, settings.prefix)
            ids.append(list(tokenizer(prompt.text, add_special_tokens=not settings.chat).input_ids))
    return ids


@torch.no_grad()
def intervention_logits(model, tokenizer, pairs, settings, columns, picks):
    """Logits (float32) of the interventions `picks` (indices into `columns`), rebuilt as patch_sweep runs
    them: all prompts of all pairs, the same shared prefix from the KV cache (the batch composition differs,
    so a bf16 near-tie may come out the other way than in the sweep: see `reproduced`)."""
    from introspect.groundtruth.patching import Intervention, Patcher, common_prefix_length

    ids = sweep_prompt_ids(pairs, tokenizer, settings)
    patcher = Patcher(model, tokenizer)
    prefix_len, cache = patcher._prefix_cache(ids, min(common_prefix_length(ids), min(columns["orig_pos"])))
    group = [(2 * columns["pair_id"][i], Intervention(2 * columns["pair_id"][i], columns["orig_pos"][i],
                                                       settings.chunks[columns["chunk"][i]],
                                                       torch.from_numpy(np.asarray(columns["vector"][i]))))
             for i in picks]
    out = []
    for start in range(0, len(group), settings.batch_size):
        out.append(patcher._run_group(ids, group[start:start + settings.batch_size], prefix_len, cache).cpu())
    return torch.cat(out) if out else torch.zeros(0)


def top2(logits: torch.Tensor, tokenizer) -> str:
    values, index = logits.topk(2)
    return (f"{tokenizer.decode([int(index[0])])!r} {float(values[0]):.3f} > {tokenizer.decode([int(index[1])])!r} "
            f"{float(values[1]):.3f}")


def stage_patching(models, tokenizer, args, cfg, table, out):
    from introspect.groundtruth.patching import Patcher, patch_sweep
    from introspect.sources.facts import load_facts, make_pairs

    pc = cfg["patching"]
    pairs = make_pairs(load_facts(**pc["facts"]), pc["n_pairs"], seed=cfg["seed"], n_options=pc["n_options"])
    pairs = pairs[: args.pairs]
    settings = sweep_settings(cfg, models["fp32"].config.num_hidden_layers)
    sides = {name: (lambda m=m: patch_sweep(pairs, m, tokenizer, settings, progress=False))
             for name, m in models.items()}
    times, results = alternate(sides, args.patch_repeats, "patching sweep")
    keyed = {name: {(c["pair_id"][i], c["orig_pos"][i], c["chunk"][i]): i for i in range(len(c["pair_id"]))}
             for name, (c, _) in results.items()}
    c32 = results["fp32"][0]
    record = {"times": times, "stats": {n: r[1] for n, r in results.items()}}
    for name in models:
        if name == "fp32":
            continue
        c16 = results[name][0]
        common = [k for k in keyed["fp32"] if k in keyed[name]]
        union = set(keyed["fp32"]) | set(keyed[name])
        same = {col: sum(c32[col][keyed["fp32"][k]] == c16[col][keyed[name][k]] for k in common)
                for col in ("patched_continuation", "has_changed", "original_continuation")}
        agree = {col: n / max(1, len(common)) for col, n in same.items()}
        agree_union = {col: n / max(1, len(union)) for col, n in same.items()}
        vec_rel = float(np.linalg.norm(np.stack([c16["vector"][keyed[name][k]] - c32["vector"][keyed["fp32"][k]]
                                                 for k in common])) /
                        np.linalg.norm(np.stack([c32["vector"][keyed["fp32"][k]] for k in common])))
        kept32 = {k[0] for k in keyed["fp32"]}
        kept16 = {k[0] for k in keyed[name]}
        acc = (f"patched_continuation {pct(agree['patched_continuation'])}, has_changed {pct(agree['has_changed'])}, "
               f"original_continuation {pct(agree['original_continuation'])} of {len(common)} common interventions "
               f"(fp32 {len(keyed['fp32'])}, {name} {len(keyed[name])}; pairs kept {len(kept32)}/{len(kept16)}; "
               f"counting the {len(union) - len(common)} one-sided as disagreements: "
               f"{pct(agree_union['patched_continuation'])} / {pct(agree_union['has_changed'])}); changed "
               f"{sum(c32['has_changed'])}/{sum(c16['has_changed'])}; patch-vector rel. error {vec_rel:.4f}")
        ok = min(agree_union["patched_continuation"], agree_union["has_changed"]) >= 0.99
        label = ("3. patching sweep (smollm2 settings)" if name == "bf16"
                 else "3b. patching sweep, bf16, float32 LM head")
        table.add(label, f"{len(pairs)} pairs, {len(settings.chunks)} chunks, batch {settings.batch_size}",
                  times["fp32"], times[name], acc, ">= 99% agreement", "yes" if ok else "NO")
        rec = {"agreement_common": agree, "agreement_union": agree_union, "vector_rel_error": vec_rel,
               "interventions": {"fp32": len(keyed["fp32"]), name: len(keyed[name]), "common": len(common)},
               "disagreements": [], "pair_keep_differs": []}
        # pairs that one side keeps and the other drops: the unpatched answers, top-2 with logits, both models
        differ = sorted(kept32 ^ kept16)
        if differ:
            ids = sweep_prompt_ids(pairs, tokenizer, settings)
            picks = [i for k in differ for i in (2 * k, 2 * k + 1)]
            logits = {n: torch.cat([l.cpu() for l in
                                    Patcher(models[n], tokenizer).last_logits([ids[i] for i in picks])])
                      for n in ("fp32", name)}
            for j, k in enumerate(differ):
                rec["pair_keep_differs"].append({
                    "pair_id": k, "kept_by": "fp32" if k in kept32 else name,
                    "original": pairs[k].original.object, "counterfactual": pairs[k].counterfactual.object,
                    "x fp32": top2(logits["fp32"][2 * j], tokenizer), f"x {name}": top2(logits[name][2 * j], tokenizer),
                    "x' fp32": top2(logits["fp32"][2 * j + 1], tokenizer),
                    f"x' {name}": top2(logits[name][2 * j + 1], tokenizer)})
        # which interventions disagree, and are they near-ties? re-run them (and a reference sample) for logits
        bad = [k for k in common
               if c32["patched_continuation"][keyed["fp32"][k]] != c16["patched_continuation"][keyed[name][k]]]
        if bad:
            rng = np.random.default_rng(0)
            bad_set = set(bad)
            agreeing = [k for k in common if k not in bad_set]
            ref = [agreeing[i] for i in rng.choice(len(agreeing), min(len(agreeing), args.reference_sample),
                                                   replace=False)]
            logits = {n: intervention_logits(models[n], tokenizer, pairs, settings, results[n][0],
                                             [keyed[n][k] for k in bad + ref]) for n in ("fp32", name)}
            gap = lambda l: (l.topk(2).values[:, 0] - l.topk(2).values[:, 1])  # noqa: E731
            for j, k in enumerate(bad):
                a32 = tokenizer.convert_tokens_to_ids(tokenizer.tokenize(c32["patched_continuation"][keyed["fp32"][k]]))
                a16 = tokenizer.convert_tokens_to_ids(tokenizer.tokenize(c16["patched_continuation"][keyed[name][k]]))
                d = {"pair_id": k[0], "orig_pos": k[1], "chunk": k[2], "token": c32["token"][keyed["fp32"][k]],
                     "original": c32["original_continuation"][keyed["fp32"][k]],
                     "fp32": c32["patched_continuation"][keyed["fp32"][k]],
                     name: c16["patched_continuation"][keyed[name][k]],
                     "rerun top-2 fp32": top2(logits["fp32"][j], tokenizer),
                     f"rerun top-2 {name}": top2(logits[name][j], tokenizer),
                     "top2_gap_fp32": round(float(gap(logits["fp32"][j:j + 1])[0]), 4)}
                if len(a32) == 1 and len(a16) == 1:  # logit of fp32's choice minus the other's, in each model
                    d["margin_in_fp32"] = round(float(logits["fp32"][j, a32[0]] - logits["fp32"][j, a16[0]]), 4)
                    d[f"margin_in_{name}"] = round(float(logits[name][j, a32[0]] - logits[name][j, a16[0]]), 4)
                rec["disagreements"].append(d)
            if ref:
                ref32, ref16 = logits["fp32"][len(bad):], logits[name][len(bad):]
                g = gap(ref32)
                rec["reference"] = {
                    "n": len(ref), "top2_gap_fp32_median": round(float(g.median()), 3),
                    "top2_gap_fp32_p10": round(float(g.quantile(0.1)), 3),
                    "top2_gap_fp32_min": round(float(g.min()), 3),
                    "top1_logit_abs_diff_median": round(float((ref16 - ref32).gather(1, ref32.argmax(1, keepdim=True))
                                                              .abs().median()), 4),
                    "top1_logit_abs_diff_max": round(float((ref16 - ref32).gather(1, ref32.argmax(1, keepdim=True))
                                                           .abs().max()), 4)}
        record[name] = rec
    out["patching"] = record


# --------------------------------------------------------------------------- 4: hints
def stage_hints(models, tokenizer, args, cfg, table, out):
    from introspect.groundtruth.hints import (HintSettings, letter_token_ids, run_hints, target_text, user_turn,
                                              LETTERS)
    from introspect.groundtruth.patching import Patcher
    from introspect.sources.questions import load_questions, questions_frame

    hc = cfg["hints"]
    spec = dict(hc["questions"])
    questions = questions_frame(load_questions(spec.pop("backend"), **spec, seed=cfg["seed"])).head(args.hint_questions)
    target = hc["targets"]["smollm2-135m"]
    settings = HintSettings(hint_format=target["hint_format"], chat=target.get("chat", True),
                            batch_size=hc["batch_size"], seed=cfg["seed"])
    sides = {name: (lambda m=m: run_hints(questions, m, tokenizer, settings, progress=False))
             for name, m in models.items()}
    times, runs = alternate(sides, args.hint_repeats, "hint runs")
    r32 = runs["fp32"]
    record = {"times": times}
    letter_ids = letter_token_ids(tokenizer)
    rows = list(questions.iter_rows(named=True))
    for name in models:
        if name == "fp32":
            continue
        r16 = runs[name]
        agree = {col: float((r32[col] == r16[col]).mean()) for col in ("answer_plain", "answer_hinted", "has_changed")}
        acc = (f"answer_plain {pct(agree['answer_plain'])}, answer_hinted {pct(agree['answer_hinted'])}, has_changed "
               f"{pct(agree['has_changed'])} of {questions.height}; changed {int(r32['has_changed'].sum())}/"
               f"{int(r16['has_changed'].sum())}; accuracy {r32['plain_correct'].mean():.3f}/"
               f"{r16['plain_correct'].mean():.3f}; follows hint {r32['follows_hint'].mean():.3f}/"
               f"{r16['follows_hint'].mean():.3f}")
        ok = min(agree["answer_plain"], agree["answer_hinted"]) >= 0.99
        label = "4. hint runs (smollm2 settings)" if name == "bf16" else "4b. hint runs, bf16, float32 LM head"
        table.add(label, f"{questions.height} questions x 2 prompts, batch {settings.batch_size}",
                  times["fp32"], times[name], acc, ">= 99% agreement", "yes" if ok else "NO")
        rec = {"agreement": agree, "disagreements": []}
        bad = [(int(i), hinted) for col, hinted in (("answer_plain", False), ("answer_hinted", True))
               for i in np.flatnonzero((r32[col] != r16[col]).to_numpy())]
        if bad:  # the letter logits of the disagreeing prompts in both models: near-ties?
            hints = r32["hint"].to_list()
            texts = [target_text(tokenizer, user_turn(rows[i], hints[i] if h else None), settings.chat) for i, h in bad]
            ids = [tokenizer(t, add_special_tokens=not settings.chat).input_ids for t in texts]
            per = {}
            for n in ("fp32", name):
                patcher = Patcher(models[n], tokenizer)
                logits = torch.cat([l.cpu() for l in patcher.last_logits(ids, settings.batch_size)])
                per[n] = torch.stack([logits[:, v].max(dim=1).values for v in letter_ids.values()], dim=1)
            for j, (i, h) in enumerate(bad):
                col = "answer_hinted" if h else "answer_plain"
                a, b = LETTERS.index(r32[col][i]), LETTERS.index(r16[col][i])
                rec["disagreements"].append({
                    "question_id": rows[i]["question_id"], "hinted": h, "fp32": r32[col][i], name: r16[col][i],
                    "letter_logits_fp32 (A-D, rerun)": [round(float(x), 3) for x in per["fp32"][j]],
                    f"letter_logits_{name} (A-D, rerun)": [round(float(x), 3) for x in per[name][j]],
                    "margin_in_fp32": round(float(per["fp32"][j, a] - per["fp32"][j, b]), 4),
                    f"margin_in_{name}": round(float(per[name][j, a] - per[name][j, b]), 4)})
        record[name] = rec
    out["hints"] = record


# --------------------------------------------------------------------------- 5: training step
def stage_training(args, cfg, table, flops, out):
    from introspect.explainers.features import FEATURE_PROMPTS, feature_question
    from introspect.explainers.model import ExplainerSettings, build_explainer, collate, encode
    from introspect.models.precision import autocast

    train = cfg["features"]["explain"]["train"]
    layer = args.layers[0]
    settings = ExplainerSettings(target_hidden=576, layers=(layer,), projection="none", tuning=train["tuning"],
                                 train_embeddings=train["train_embeddings"], vector_norm=train.get("vector_norm"))
    explainers = {}
    for name in ("fp32", "bf16"):
        torch.manual_seed(0)
        explainers[name] = build_explainer(args.model, settings)
        explainers[name].train()
    same = all(torch.equal(a, b) for a, b in zip(explainers["fp32"].parameters(), explainers["bf16"].parameters()))
    tok = explainers["fp32"].tokenizer
    items = [encode(tok, feature_question(FEATURE_PROMPTS[i % len(FEATURE_PROMPTS)], layer),
                    FEATURE_LABELS[i % len(FEATURE_LABELS)]) for i in range(args.train_batch)]
    vectors = torch.randn(args.train_batch, 576, generator=torch.Generator().manual_seed(0))
    batch = collate(items, tok.pad_token_id, vectors, [layer] * args.train_batch)
    optimisers = {n: torch.optim.AdamW([p for p in e.parameters() if p.requires_grad], lr=train["lr"])
                  for n, e in explainers.items()}
    contexts = {"fp32": lambda: autocast(torch.float32, "cpu"), "bf16": lambda: autocast(torch.bfloat16, "cpu")}
    times = {n: [] for n in explainers}
    losses = {n: [] for n in explainers}
    grads = {}
    for step in range(args.train_steps + 1):  # step 0 warms up (not timed); every step also updates the weights
        for name, explainer in explainers.items():
            optimisers[name].zero_grad(set_to_none=True)
            started = time.perf_counter()
            with contexts[name]():
                loss = explainer(batch)
            loss.backward()
            seconds = time.perf_counter() - started
            if step == 0:  # the first gradient, at identical weights: how close is autocast's?
                grads[name] = torch.cat([p.grad.flatten() for p in explainer.parameters() if p.grad is not None])
            optimisers[name].step()
            losses[name].append(float(loss))
            if step:
                times[name].append(seconds)
            log(f"training step {step}: {name} {seconds:.2f} s, loss {float(loss):.4f}")
    tokens = int(batch.attention_mask.sum())
    width = batch.input_ids.shape[1]
    n_params = block_params(explainers["fp32"].lm)
    for name in explainers:
        flops[f"forward+backward, explainer ({name})"] = (6 * n_params * tokens, statistics.median(times[name]), name)
    with torch.no_grad():  # the weights each side ended with, both evaluated in float32
        final = {n: float(e(batch)) for n, e in explainers.items()}
    g32, g16 = grads["fp32"], grads["bf16"]
    grad_cos = float(torch.nn.functional.cosine_similarity(g32.double(), g16.double(), dim=0))  # float32 sums drift
    grad_rel = float((g16.double() - g32.double()).norm() / g32.double().norm())
    sign = float((torch.sign(g32) == torch.sign(g16)).float().mean())
    del grads, g32, g16
    diffs = [abs(a - b) for a, b in zip(losses["fp32"], losses["bf16"])]
    acc = (f"loss step 1 (same weights) {losses['fp32'][0]:.4f} vs {losses['bf16'][0]:.4f}; steps 1-"
           f"{len(losses['fp32'])}: {' '.join(f'{a:.3f}/{b:.3f}' for a, b in zip(losses['fp32'], losses['bf16']))} "
           f"(max abs diff {max(diffs):.4f}); final weights in fp32: {final['fp32']:.4f} vs {final['bf16']:.4f}; "
           f"step-1 gradient: cosine {grad_cos:.4f}, rel. error {grad_rel:.4f}, same sign {pct(sign)} (AdamW's first "
           f"update is ~lr x sign(g)); same init {same}")
    table.add("5. explainer step fwd+bwd (autocast)", f"batch {args.train_batch} x {width} tokens, full, frozen emb.",
              times["fp32"], times["bf16"], acc, "report", "")
    out["training"] = {"times": times, "losses": losses, "final_loss_fp32_eval": final, "grad_cosine": grad_cos,
                       "grad_rel_error": grad_rel, "grad_sign_agreement": sign, "tokens": tokens,
                       "width": width, "same_init": same}
    del explainers, optimisers


# --------------------------------------------------------------------------- 6: GEMM
def stage_gemm(args, table, out) -> dict:
    n = args.gemm_size
    times = {"fp32": [], "bf16": []}
    mats = {name: (torch.randn(n, n, dtype=dt), torch.randn(n, n, dtype=dt))
            for name, dt in (("fp32", torch.float32), ("bf16", torch.bfloat16))}
    for name, (a, b) in mats.items():
        a @ b  # warm-up
    for _ in range(args.gemm_repeats):
        for name, (a, b) in mats.items():
            times[name].append(timed(lambda: a @ b)[0])
    rate = {name: 2 * n ** 3 / statistics.median(t) / 1e9 for name, t in times.items()}
    table.add(f"6. GEMM {n}^3", f"{args.threads} threads, median of {args.gemm_repeats}", times["fp32"], times["bf16"],
              f"{rate['fp32']:.0f} vs {rate['bf16']:.0f} GFLOP/s", "", "")
    out["gemm"] = {"times": times, "gflops": rate}
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resources/models/smollm2-135m")
    parser.add_argument("--config", default="config.yaml")
    parser.add_argument("--tokens", type=int, default=8192, help="corpus tokens for the cache and the SAE")
    parser.add_argument("--layers", type=int, nargs="+", default=[16, 8])
    parser.add_argument("--sae-epochs", type=int, default=None, help="default: features.sae.epochs")
    parser.add_argument("--pairs", type=int, default=40)
    parser.add_argument("--hint-questions", type=int, default=200)
    parser.add_argument("--train-batch", type=int, default=8)
    parser.add_argument("--train-steps", type=int, default=4, help="timed steps after one warm-up step")
    parser.add_argument("--repeats", type=int, default=2, help="repeats of the activation cache")
    parser.add_argument("--patch-repeats", type=int, default=2)
    parser.add_argument("--hint-repeats", type=int, default=2)
    parser.add_argument("--gemm-size", type=int, default=2048)
    parser.add_argument("--gemm-repeats", type=int, default=5)
    parser.add_argument("--reference-sample", type=int, default=64,
                        help="agreeing interventions re-run for their top-2 logit gap, to compare disagreements with")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--stages", default="1,3,4,5,6", help="comma-separated; 1 includes 2 (the SAE)")
    parser.add_argument("--quick", action="store_true",
                        help="4,096 tokens, layer 16 only, 20 pairs, 100 questions, 2 training steps, one repeat each")
    parser.add_argument("--json", default=None, help="also write every number (and the disagreements) here")
    if "--quick" in sys.argv[1:]:  # smaller defaults; flags given explicitly still win
        parser.set_defaults(tokens=4096, layers=[16], pairs=20, hint_questions=100, train_steps=2, repeats=1,
                            patch_repeats=1, hint_repeats=1, gemm_repeats=3)
    parser.add_argument("--no-head32", action="store_true",
                        help="skip the third side of stages 3-4 (bf16 weights with a float32 LM head)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    stages = {s.strip() for s in args.stages.split(",")}
    cfg = yaml.safe_load(Path(args.config).read_text())
    from introspect.models.loading import load_model

    started = time.perf_counter()
    table, flops, out = Table(), {}, {"args": vars(args)}
    models = {}
    if stages & {"1", "3", "4"}:
        for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            models[name], tokenizer, _ = load_model(args.model, device="cpu", dtype=dtype)
        if not args.no_head32:
            models[HEAD32], _, _ = load_model(args.model, device="cpu", dtype=torch.bfloat16)
            models[HEAD32].lm_head = Float32Head(models[HEAD32].lm_head)
        with torch.no_grad():  # warm-up: the kernels of both dtypes
            for m in models.values():
                m(input_ids=torch.randint(100, 40000, (16, 64)), use_cache=False)
    two = {n: models[n] for n in ("fp32", "bf16") if n in models}
    if "1" in stages:
        stage_activations(two, tokenizer, args, cfg, table, flops, out)
    if "3" in stages:
        stage_patching(models, tokenizer, args, cfg, table, out)
    if "4" in stages:
        stage_hints(models, tokenizer, args, cfg, table, out)
    two.clear()
    models.clear()
    if "5" in stages:
        stage_training(args, cfg, table, flops, out)
    rate = stage_gemm(args, table, out) if "6" in stages else None

    cpu = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                if l.startswith("model name")), "?")
    from introspect.models.precision import cpu_has_bf16_matmul

    print(f"model {args.model}, {args.threads} threads, CPU {cpu} (native bf16 matmul: {cpu_has_bf16_matmul()}), "
          f"torch {torch.__version__}; medians of alternating runs (each run's seconds in brackets); "
          f"speed-up = fp32 time / bf16 time; total {time.perf_counter() - started:.0f} s\n")
    print(table.markdown())
    if flops:
        print("\n| what | GFLOP per run | fp32/bf16 side | GFLOP/s | share of that dtype's GEMM rate |")
        print("|---|---|---|---|---|")
        for what, (work, seconds, name) in flops.items():
            share = f"{100 * work / seconds / 1e9 / rate[name]:.0f}%" if rate else ""
            print(f"| {what} | {work / 1e9:.1f} | {name} | {work / seconds / 1e9:.1f} | {share} |")
        print("\n(work = 2 x block parameters x tokens for a forward, 6 x for forward+backward; attention scores, "
              "the LM head and padding are not counted)")
    for stage in ("patching", "hints"):
        for side, rec in out.get(stage, {}).items():
            if not isinstance(rec, dict) or side in ("times", "stats"):
                continue
            for key in ("pair_keep_differs", "disagreements"):
                if rec.get(key):
                    print(f"\n{stage}, {side} vs fp32: {len(rec[key])} {key.replace('_', ' ')}")
                    for d in rec[key]:
                        print(f"- {json.dumps(d, ensure_ascii=False)}")
            if rec.get("reference"):
                print(f"\n{stage}, {side}: agreeing reference interventions: {json.dumps(rec['reference'])}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2, default=str))


if __name__ == "__main__":
    main()
