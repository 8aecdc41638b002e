"""Training and evaluation sets of the feature task (paper section 3.2, appendix E.1).

The labelled SAE features are split into the explainers' training pool and the held-out SAE eval set; the
ACT eval set holds residual-stream activations of corpus tokens, the dACT set activation differences of
counterfactual pairs, each with exemplars for the simulator.
"""

from __future__ import annotations

import logging
import math
import random
from typing import Callable, Sequence

import numpy as np
import polars as pl
import torch

from introspect.groundtruth.activations import usable_rows
from introspect.groundtruth.exemplars import ExemplarSettings, FeaturesError, _nested, exemplars, make_windows

log = logging.getLogger(__name__)


def eval_items(layer: int, ids: Sequence[str], vectors: np.ndarray, labels: Sequence[str | None],
               sources: Sequence[str], found: dict[str, np.ndarray], n_top: int) -> pl.DataFrame:
    """Rows of an eval set (schema ``feature_eval``): a vector, its gold label if any and its exemplars."""
    n_slots = found["windows"].shape[1]
    kinds = ["top"] * n_top + ["random"] * (n_slots - n_top)
    n = len(ids)
    return pl.DataFrame([
        pl.Series("item_id", list(ids), dtype=pl.String),
        pl.Series("layer", np.full(n, layer, dtype=np.int64)),
        pl.Series("vector", np.asarray(vectors, dtype=np.float32)).cast(pl.Array(pl.Float32, vectors.shape[1])),
        pl.Series("label", list(labels), dtype=pl.String),
        pl.Series("source", list(sources), dtype=pl.String),
        _nested("windows", found["windows"].astype(np.int64), pl.List(pl.Int64)),
        pl.Series("kinds", [kinds] * n, dtype=pl.List(pl.String)),
        _nested("activations", found["activations"].astype(np.float32), pl.List(pl.List(pl.Float32)))])


def split_features(labels: pl.DataFrame, features: pl.DataFrame, exemplar_table: pl.DataFrame,
                   n_test: int, seed: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Hold out `n_test` labelled features of one layer (seeded) as the SAE test set; the rest train.

    Test features are drawn among those with exemplars (they are scored by the simulator); a labelled
    feature without exemplars (possible with Neuronpedia labels) can still train.
    """
    joined = labels.join(features, on=["layer", "feature"], how="inner").sort("feature")
    scorable = joined.join(exemplar_table.select("layer", "feature"), on=["layer", "feature"], how="semi")
    if scorable.height <= n_test:
        raise FeaturesError(f"layer {labels['layer'][0] if labels.height else '?'}: {scorable.height} labelled "
                            f"features with exemplars cannot hold out {n_test}; lower features.split.n_test")
    rng = random.Random(seed)
    test_ids = set(rng.sample(scorable["feature"].to_list(), n_test))
    is_test = pl.col("feature").is_in(list(test_ids))
    train = joined.filter(~is_test).select(
        (pl.lit("L") + pl.col("layer").cast(pl.String) + pl.lit("/f") + pl.col("feature").cast(pl.String)).alias("item_id"),
        "layer", "feature", "vector", "label", "score")
    test = joined.filter(is_test).join(exemplar_table.select("layer", "feature", "windows", "kinds", "activations"),
                                       on=["layer", "feature"], how="inner")
    test = test.select(
        (pl.lit("L") + pl.col("layer").cast(pl.String) + pl.lit("/f") + pl.col("feature").cast(pl.String)).alias("item_id"),
        "layer", "vector", "label", (pl.lit("sae feature ") + pl.col("feature").cast(pl.String)).alias("source"),
        "windows", "kinds", "activations")
    return train, test


def sample_markdown(labels: pl.DataFrame, exemplar_table: pl.DataFrame, windows: pl.DataFrame, n: int, seed: int,
                    n_show: int = 3) -> str:
    """A readable sample of labels with their top exemplars (the peak token in bold)."""
    rng = random.Random(seed)
    keys = labels.select("layer", "feature").join(exemplar_table.select("layer", "feature"),
                                                  on=["layer", "feature"], how="semi").sort(["layer", "feature"])
    picks = keys[sorted(rng.sample(range(keys.height), min(n, keys.height)))]
    table = labels.join(picks, on=["layer", "feature"], how="semi").join(exemplar_table, on=["layer", "feature"])
    lines = ["# Sample of feature labels", "",
             "Each feature: the chosen label, its simulator score on the selecting exemplars and on the held-out",
             "half, and its top exemplars with the peak token in **bold** (activation in brackets).", ""]
    for row in table.sort(["layer", "feature"]).iter_rows(named=True):
        lines.append(f"## Layer {row['layer']}, feature {row['feature']}: {row['label']}")
        line = f"score {_fmt(row['score'])} (held-out half {_fmt(row['check_score'])})"
        if row["random_candidate"] is not None:
            line += f"; random candidate \"{row['random_candidate']}\" {_fmt(row['random_score'])}"
        lines.append(line)
        lines.append("")
        for w, acts in list(zip(row["windows"], row["activations"]))[:n_show]:
            tokens = windows["tokens"][int(w)].to_list()
            peak = int(np.argmax(acts))
            text = "".join(_bold(t, acts[peak]) if j == peak else t for j, t in enumerate(tokens))
            text = text.replace("\n", " ")
            lines.append(f"- {text}")
        lines.append("")
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.3f}"


def _bold(token: str, value: float) -> str:
    core = token.strip()
    if not core:
        return f"**{token!r}** [{value:.2f}]"
    lead = token[: len(token) - len(token.lstrip())]
    return f"{lead}**{core}** [{value:.2f}]"


def sample_positions(tokens: pl.DataFrame, n: int, seed: int) -> np.ndarray:
    """`n` usable eval-token rows drawn without replacement (seeded), sorted: the ACT positions."""
    rows = usable_rows(tokens, "eval")
    if len(rows) < n:
        raise FeaturesError(f"{len(rows)} eval tokens cannot give {n} ACT vectors; lower features.eval.n_act")
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(rows, size=n, replace=False))


def subject_final_index(prompt_text: str, subject: str, offsets: Sequence[tuple[int, int]],
                        start: int | None = None) -> int:
    """Index of the token holding the subject's last character in `prompt_text` (offsets of its tokens).

    `start`: where the subject begins (the template's ``{}``); by default its first occurrence.
    """
    start = prompt_text.find(subject) if start is None else start
    if prompt_text[start:start + len(subject)] != subject:
        start = -1
    if start < 0:
        raise FeaturesError(f"subject {subject!r} is not in {prompt_text!r}")
    last = start + len(subject) - 1
    for i, (s, e) in enumerate(offsets):
        if s <= last < e:
            return i
    raise FeaturesError(f"no token covers the end of {subject!r} in {prompt_text!r}")


def act_eval_set(layers: Sequence[int], load: Callable[[int], torch.Tensor], tokens: pl.DataFrame, n: int,
                 settings: ExemplarSettings, seed: int, progress: bool = True) -> pl.DataFrame:
    """ACT: v = h_{l,t}(x) at `n` sampled eval tokens per layer, each with its exemplars (a_v = <h, v>).

    `load(layer)` gives that layer's cache; one layer is held at a time. Layer l draws with seed + l, so
    adding a layer leaves the other layers' items unchanged.
    """
    windows = make_windows(tokens, settings.width)
    texts = tokens["text"].to_list()
    doc_ids = tokens["doc_id"].to_list()
    frames = []
    for layer in sorted(layers):
        hidden = load(layer)
        rows = sample_positions(tokens, n, seed + layer)
        vectors = hidden[torch.from_numpy(rows)].float()
        found = exemplars(hidden, windows, lambda h: h @ vectors.T, n, settings, seed + layer, progress)
        ids = [f"L{layer}/act/{i}" for i in range(n)]
        sources = [f"token {texts[r]!r} of {doc_ids[r]} (row {r})" for r in rows]
        frames.append(eval_items(layer, ids, vectors.numpy(), [None] * n, sources, found, settings.n_top))
        del hidden
    return pl.concat(frames)


def dact_vectors(model, tokenizer, pairs: pl.DataFrame, layers: Sequence[int], n: int, seed: int,
                 batch_size: int = 16) -> tuple[dict[int, np.ndarray], list[str]]:
    """dACT: h_{l,t}(x) - h_{l,t'}(x') at the subject's last token of `n` counterfactual pairs (seeded).

    x is the fact statement with the pair's subject ("Rome is the capital of"), x' the same with the
    counterfactual subject; t and t' are the tokens holding each subject's last character. Pairs where t or
    t' is position 0 of the model input (a one-token subject first in the prompt of a model without BOS:
    the attention sink) are skipped, as everywhere else in the feature stages.
    """
    from introspect.groundtruth.activations import bos_prefix, layer_outputs, pad_id

    prefix = bos_prefix(tokenizer)
    order = list(range(pairs.height))
    random.Random(seed).shuffle(order)
    seqs, positions, sources, skipped = [], [], [], 0
    for i in order:
        if len(sources) == n:
            break
        row = pairs.row(i, named=True)
        template = row["template"]
        if "{}" not in template:
            raise FeaturesError(f"pair {row['pair_id']}: template {template!r} has no {{}} for the subject")
        pair_seqs, pair_pos = [], []
        start = template.index("{}")
        for subject in (row["subject"], row["counterfactual_subject"]):
            text = template.format(subject)
            enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
            pair_pos.append(len(prefix) + subject_final_index(text, subject, enc.offset_mapping, start))
            pair_seqs.append(prefix + list(enc.input_ids))
        if min(pair_pos) == 0:
            skipped += 1
            continue
        seqs += pair_seqs
        positions += pair_pos
        sources.append(f"pair {row['pair_id']}: {template.format(row['subject'])!r} - "
                       f"{template.format(row['counterfactual_subject'])!r}")
    if not sources:
        raise FeaturesError("no counterfactual pair gives a usable subject position; dACT needs patching pairs")
    if len(sources) < n:
        log.warning("dACT: only %d usable pairs of %d wanted (%d skipped: subject at the sink position)",
                    len(sources), n, skipped)
    hidden = layer_outputs(model, seqs, layers, batch_size, pad_id(tokenizer), progress=False)
    vectors = {}
    for layer in layers:
        at = [hidden[layer][j][positions[j]] for j in range(len(seqs))]
        vectors[layer] = torch.stack([at[2 * k] - at[2 * k + 1] for k in range(len(sources))]).numpy()
    return vectors, sources


def vector_eval_set(kind: str, vectors: dict[int, np.ndarray], sources: Sequence[str],
                    load: Callable[[int], torch.Tensor], tokens: pl.DataFrame, settings: ExemplarSettings,
                    seed: int, progress: bool = True) -> pl.DataFrame:
    """Eval items of given vectors per layer, with exemplars by a_v = <h, v> over the eval windows."""
    windows = make_windows(tokens, settings.width)
    frames = []
    for layer in sorted(vectors):
        hidden = load(layer)
        v = torch.as_tensor(vectors[layer], dtype=torch.float32)
        found = exemplars(hidden, windows, lambda h: h @ v.T, v.shape[0], settings, seed + layer, progress)
        ids = [f"L{layer}/{kind}/{i}" for i in range(v.shape[0])]
        frames.append(eval_items(layer, ids, v.numpy(), [None] * v.shape[0], list(sources), found, settings.n_top))
        del hidden
    return pl.concat(frames)
