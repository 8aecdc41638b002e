"""How often a feature vector, as the explainer would see it at its input, looks like the word it is about.

For every training feature labelled `the word "X"` (X one token, with or without a leading space), take the
vector written over the placeholder — v itself (identity, the paper's self-explainer) or Pi_l v for each
projection file given — and ask whether X is the explainer's nearest input-embedding row by cosine. This is
the measurement behind docs/results.md, Table 1: SAE decoder directions of
SmolLM2's layers 8/16 almost never point at their word's embedding, while Pi_l fitted onto the input
embedding (`align: input`) maps many of them there. With --copy N, the *untrained* explainer is also asked
to repeat the word written over a placeholder (`Repeat this word exactly: "<v>". The word is "`, v rescaled
to the mean token-embedding norm) for N features per layer: how often it answers X says whether the
vector is readable as that word before any training; the same question with the word's own token embedding
at the placeholder gives the ceiling.

    .venv/bin/python tools/feature_token_check.py results/smollm2-135m/features/train.parquet \
        resources/models/smollm2-135m \
        results/smollm2-135m/features/projections/input/smollm2-135m.safetensors
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import polars as pl
import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))

from introspect.explainers.model import mean_embedding_norm  # noqa: E402
from introspect.models.loading import load_model  # noqa: E402
from introspect.tensorfiles import RowFile  # noqa: E402

WORD_LABEL = re.compile(r'the word "(.+)"')


def word_token_ids(tokenizer, label: str) -> set[int]:
    """The single-token ids of X (as is, and after a space) for a `the word "X"` label; empty otherwise."""
    match = WORD_LABEL.fullmatch(label)
    if not match:
        return set()
    ids = (tokenizer(text, add_special_tokens=False)["input_ids"] for text in (match.group(1), " " + match.group(1)))
    return {i[0] for i in ids if len(i) == 1}


def nearest_token_hits(vectors: torch.Tensor, wanted: list[set[int]], unit_embeddings: torch.Tensor) -> int:
    """How many rows of `vectors` have one of their wanted ids as the nearest (unit-norm) embedding row."""
    nearest = (vectors @ unit_embeddings.T).argmax(1).tolist()
    return sum(n in ids for n, ids in zip(nearest, wanted))


COPY_PROMPT = ('Repeat this word exactly: "', '". The word is "')


@torch.no_grad()
def copy_hits(model, tokenizer, vectors: torch.Tensor, words: list[str], batch_size: int = 64) -> int:
    """How often the model, reading each vector at a placeholder, repeats the labelled word (greedy, 4 tokens)."""
    embed = model.get_input_embeddings()
    before, after = (tokenizer(t, add_special_tokens=False)["input_ids"] for t in COPY_PROMPT)
    ids = torch.tensor([before + [0] + after])
    norm = mean_embedding_norm(model)
    hits = 0
    for start in range(0, len(vectors), batch_size):
        v = vectors[start:start + batch_size]
        inputs = embed(ids).repeat(len(v), 1, 1).clone()
        inputs[:, len(before)] = (v * (norm / v.norm(dim=1, keepdim=True).clamp_min(1e-12))).to(inputs.dtype)
        out = model.generate(inputs_embeds=inputs, attention_mask=torch.ones(inputs.shape[:2], dtype=torch.long),
                             max_new_tokens=4, do_sample=False, pad_token_id=tokenizer.pad_token_id or 0)
        for text, word in zip(tokenizer.batch_decode(out, skip_special_tokens=True), words[start:start + batch_size]):
            hits += text.split('"')[0].strip().lower() == word.strip().lower()
    return hits


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("train", help="the target's features/train.parquet (layer, label, row per feature; the "
                                      "vectors are read from train_vectors.safetensors next to it)")
    parser.add_argument("explainer", help="the explainer's model folder (its input embeddings are compared)")
    parser.add_argument("projections", nargs="*", help="projection .safetensors files (one Pi_l per layer)")
    parser.add_argument("--copy", type=int, default=0, metavar="N",
                        help="also test whether the untrained explainer repeats the word, on N features per layer")
    args = parser.parse_args(argv)
    model, tokenizer, _ = load_model(args.explainer)
    embeddings = model.get_input_embeddings().weight.detach().float()
    unit = embeddings / embeddings.norm(dim=1, keepdim=True).clamp_min(1e-12)
    train = pl.read_parquet(args.train)
    bank = RowFile(Path(args.train).with_name("train_vectors.safetensors"))
    maps = {"identity (v as it is)": None} | {p: {int(k): w.float() for k, w in load_file(p).items()}
                                               for p in args.projections}
    for layer in sorted(set(train["layer"].to_list())):
        rows = train.filter(pl.col("layer") == layer)
        wanted = [word_token_ids(tokenizer, label) for label in rows["label"].to_list()]
        keep = [i for i, ids in enumerate(wanted) if ids]
        vectors = torch.from_numpy(bank.take(rows["row"].to_numpy()[keep]).astype("float32"))
        wanted = [wanted[i] for i in keep]
        words = [WORD_LABEL.fullmatch(rows["label"][i]).group(1) for i in keep]
        for name, weights in maps.items():
            if weights is not None and vectors.shape[1] != weights[layer].shape[1]:
                raise SystemExit(f"{name}: layer {layer}'s projection takes {weights[layer].shape[1]} dimensions, "
                                 f"the vectors have {vectors.shape[1]}")
            if weights is None and vectors.shape[1] != embeddings.shape[1]:
                print(f"layer {layer}: {name}: skipped, the explainer's hidden size differs")
                continue
            seen = vectors if weights is None else vectors @ weights[layer].T
            hits = nearest_token_hits(seen, wanted, unit)
            print(f"layer {layer}: {name}: nearest token = the labelled word for {hits} of {len(keep)} "
                  f"one-token 'the word' features ({100 * hits / max(len(keep), 1):.1f}%)")
            if args.copy:
                n = min(args.copy, len(keep))
                copied = copy_hits(model, tokenizer, seen[:n], words[:n])
                print(f"layer {layer}: {name}: the untrained explainer repeats the word for {copied} of {n}")
        if args.copy:
            n = min(args.copy, len(keep))
            own = embeddings[[min(ids) for ids in wanted[:n]]]
            print(f"layer {layer}: the word's own token embedding instead: repeated for "
                  f"{copy_hits(model, tokenizer, own, words[:n])} of {n}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
