"""Feature-description ground truth (paper section 2.2, 3.2, appendix E.1): exemplars, labels, splits, eval sets.

Exemplars are *windows*: the usable eval tokens of each corpus sequence cut into consecutive runs of
``width`` tokens (:func:`make_windows`). A feature's (or any vector's) exemplars are its ``n_top`` windows
with the highest maximum activation and ``n_random`` other windows drawn at random (seeded), each with the
true activation at every token: the SAE encoder's output for an SAE feature, ``a_v = <h, v>`` for a vector.

Labels follow equation 2 (``simulator_argmax``): every candidate description is scored by the simulator
on the feature's exemplars and the best is kept. Exemplars are split in two halves (even ranks select,
odd ranks check) so that the chosen label's score is also measured on exemplars that did not choose it,
next to the score of a random candidate on the same held-out half.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
from collections import Counter
from importlib import resources
from typing import Callable, Sequence

import numpy as np
import polars as pl
import torch
from tqdm.auto import tqdm

from introspect.activations import usable_rows
from introspect.schemas import FEATURE_LABELS
from introspect.simulation import Exemplar

log = logging.getLogger(__name__)

ActFn = Callable[[torch.Tensor], torch.Tensor]  # hidden (n, d) -> activations (n, n_items)

LABELS_SCHEMA = FEATURE_LABELS  # the labels table as introspect.schemas documents it


class FeaturesError(ValueError):
    """Feature data is missing or inconsistent; the message says which and what to do."""


@dataclasses.dataclass(frozen=True)
class ExemplarSettings:
    width: int = 32       # tokens per window
    n_top: int = 10       # top-activating windows per feature
    n_random: int = 4     # random windows per feature
    max_values: int = 200_000_000  # activations held per encoder pass (windows x width x items), ~800 MB


def concepts() -> list[str]:
    """The project's curated concept descriptions (lib/introspect/data/concepts.txt)."""
    text = resources.files("introspect").joinpath("data/concepts.txt").read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def make_windows(tokens: pl.DataFrame, width: int) -> pl.DataFrame:
    """Eval-split windows: (window_id, seq_id, rows = token-table row indices, tokens = their texts)."""
    rows = usable_rows(tokens, "eval")
    seq = tokens["seq_id"].to_numpy()[rows]
    texts = tokens["text"].to_list()
    out = {"window_id": [], "seq_id": [], "rows": [], "tokens": []}
    start = 0
    while start < len(rows):
        end = start
        while end < len(rows) and seq[end] == seq[start]:
            end += 1
        for w in range(start, end - width + 1, width):
            index = rows[w:w + width]
            out["window_id"].append(len(out["window_id"]))
            out["seq_id"].append(int(seq[start]))
            out["rows"].append(index.tolist())
            out["tokens"].append([texts[i] for i in index])
        start = end
    if not out["window_id"]:
        raise FeaturesError(f"the eval documents give no window of {width} tokens; lower "
                            "features.exemplars.width or raise the corpus size")
    return pl.DataFrame(out, schema={"window_id": pl.Int64, "seq_id": pl.Int64, "rows": pl.List(pl.Int64),
                                     "tokens": pl.List(pl.String)})


def window_rows(windows: pl.DataFrame) -> np.ndarray:
    return np.array(windows["rows"].to_list(), dtype=np.int64)


@torch.no_grad()
def exemplars(hidden: torch.Tensor, windows: pl.DataFrame, act_fn: ActFn, n_items: int,
              settings: ExemplarSettings, seed: int, progress: bool = True) -> dict[str, np.ndarray]:
    """Top and random windows of every item, with per-token activations.

    Returns ``max_activation`` (n_items,), ``windows`` (n_items, n_top + n_random) window ids (top first, by
    decreasing activation) and ``activations`` (n_items, n_top + n_random, width) float32.
    """
    index = window_rows(windows)
    n_windows, width = index.shape
    if n_windows < settings.n_top + settings.n_random:
        raise FeaturesError(f"{n_windows} eval windows cannot give {settings.n_top} top and {settings.n_random} "
                            "random exemplars; lower features.exemplars.n_top/n_random or add eval text")
    maxima = torch.empty((n_windows, n_items), dtype=torch.float32)
    per_pass = max(1, settings.max_values // (width * n_items))
    chunks = range(0, n_windows, per_pass)
    for start in tqdm(chunks, desc="window maxima", disable=not progress, leave=False):
        rows = torch.from_numpy(index[start:start + per_pass].reshape(-1))
        acts = act_fn(hidden[rows].float()).reshape(-1, width, n_items)
        maxima[start:start + per_pass] = acts.max(1).values
    top_values, top = maxima.topk(settings.n_top, dim=0)  # (n_top, n_items)
    top = top.T.numpy()
    rng = np.random.default_rng(seed)
    chosen = np.empty((n_items, settings.n_top + settings.n_random), dtype=np.int64)
    chosen[:, : settings.n_top] = top
    for item in range(n_items):
        taken = set(top[item].tolist())
        extra = []
        while len(extra) < settings.n_random:
            w = int(rng.integers(n_windows))
            if w not in taken:
                taken.add(w)
                extra.append(w)
        chosen[item, settings.n_top:] = extra
    activations = np.zeros((n_items, chosen.shape[1], width), dtype=np.float32)
    for start in tqdm(chunks, desc="exemplar activations", disable=not progress, leave=False):
        stop = min(start + per_pass, n_windows)
        item_idx, slot_idx = np.nonzero((chosen >= start) & (chosen < stop))
        if not len(item_idx):
            continue
        rows = torch.from_numpy(index[start:stop].reshape(-1))
        acts = act_fn(hidden[rows].float()).reshape(stop - start, width, n_items)
        local = torch.from_numpy(chosen[item_idx, slot_idx] - start)
        activations[item_idx, slot_idx] = acts[local, :, torch.from_numpy(item_idx)].numpy()
    return {"max_activation": top_values[0].numpy(), "windows": chosen, "activations": activations}


def exemplar_frame(layer: int, items: Sequence[int], found: dict[str, np.ndarray], n_top: int) -> pl.DataFrame:
    n_slots = found["windows"].shape[1]
    kinds = ["top"] * n_top + ["random"] * (n_slots - n_top)
    n = len(items)
    return pl.DataFrame([
        pl.Series("layer", np.full(n, layer, dtype=np.int64)),
        pl.Series("feature", np.asarray(items, dtype=np.int64)),
        pl.Series("max_activation", found["max_activation"][:n].astype(np.float32)),
        _nested("windows", found["windows"].astype(np.int64), pl.List(pl.Int64)),
        pl.Series("kinds", [kinds] * n, dtype=pl.List(pl.String)),
        _nested("activations", found["activations"].astype(np.float32), pl.List(pl.List(pl.Float32)))])


def _nested(name: str, values: np.ndarray, dtype) -> pl.Series:
    """A List column from a numpy array without a round trip through Python objects."""
    if values.shape[0] == 0:
        return pl.Series(name, [], dtype=dtype)
    return pl.Series(name, values).cast(dtype)


def to_exemplars(window_ids: Sequence[int], activations: Sequence[Sequence[float]],
                 windows: pl.DataFrame) -> list[Exemplar]:
    texts = windows["tokens"]
    return [Exemplar(tuple(texts[int(w)]), tuple(a)) for w, a in zip(window_ids, activations)]


def halves(n_top: int, n_slots: int) -> tuple[list[int], list[int]]:
    """Slots that select a label (even ranks of top and of random) and slots that check it (odd ranks)."""
    select = [i for i in range(n_top) if i % 2 == 0] + [i for i in range(n_top, n_slots) if (i - n_top) % 2 == 0]
    return select, [i for i in range(n_slots) if i not in select]


def _display(token: str) -> str:
    return token.strip()


def token_candidates(exemplar_list: Sequence[Exemplar], n_top: int, n_words: int = 3) -> list[str]:
    """Descriptions naming the tokens where the feature peaks in its top exemplars."""
    peaks = Counter()
    for ex in exemplar_list[:n_top]:
        if max(ex.activations) > 0:
            word = _display(ex.tokens[int(np.argmax(ex.activations))])
            if word:
                peaks[word.lower()] += 1
    words = [w for w, _ in peaks.most_common(n_words)]
    out = [f'the word "{w}"' if any(c.isalnum() for c in w) else f'the symbol "{w}"' for w in words]
    if len(words) >= 2:
        out.append("words such as " + ", ".join(f'"{w}"' for w in words))
    return out


def label_features(exemplar_table: pl.DataFrame, windows: pl.DataFrame, simulator, concept_list: Sequence[str],
                   n_top: int, seed: int, progress: bool = True) -> pl.DataFrame:
    """Equation 2 over each feature's candidates: the best-scoring description on the selecting half."""
    rng = random.Random(seed)
    if hasattr(simulator, "prepare"):
        simulator.prepare(windows["tokens"].to_list())
    rows = []
    items = exemplar_table.iter_rows(named=True)
    for row in tqdm(items, total=exemplar_table.height, desc="labels", disable=not progress):
        ex = to_exemplars(row["windows"], row["activations"], windows)
        select, check = halves(n_top, len(ex))
        # candidates come from the selecting half only, so the check half stays held out
        top_select = [ex[i] for i in select if i < n_top]
        candidates = list(dict.fromkeys(token_candidates(top_select, len(top_select)) + list(concept_list)))
        scores = np.asarray(simulator.score_many(candidates, [ex[i] for i in select]), dtype=np.float64)
        other = rng.randrange(len(candidates))
        if np.isnan(scores).all():
            log.warning("layer %s feature %s: no candidate has a simulator score; not labelled",
                        row["layer"], row["feature"])
            continue
        best = int(np.nanargmax(scores))
        checked = simulator.score_many([candidates[best], candidates[other]], [ex[i] for i in check])
        rows.append({"layer": row["layer"], "feature": row["feature"], "label": candidates[best],
                     "score": _float(scores[best]), "check_score": _float(checked[0]),
                     "random_candidate": candidates[other], "random_score": _float(scores[other]),
                     "random_check_score": _float(checked[1]), "candidates": candidates,
                     "candidate_scores": scores.tolist()})
    return pl.DataFrame(rows, schema=LABELS_SCHEMA)


def _float(x) -> float | None:
    x = float(x)
    return None if math.isnan(x) else x


def label_stats(labels: pl.DataFrame) -> dict:
    def mean(col):
        values = labels[col].drop_nulls()
        return None if values.is_empty() else float(values.mean())

    return {"labelled": labels.height, "mean_score_chosen": mean("score"), "mean_score_random_candidate": mean("random_score"),
            "mean_check_score_chosen": mean("check_score"),
            "mean_check_score_random_candidate": mean("random_check_score")}


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


def simulator_from_config(settings: dict, cache_dir: str, device: str = "cpu"):
    """The simulator of features.simulator: embedding (offline), openai or finetuned."""
    from introspect import simulation

    backend = settings["backend"]
    if backend == "embedding":
        from introspect.embedding import EmbeddingSimulator

        return EmbeddingSimulator()
    if backend == "openai":
        return simulation.OpenAISimulator(settings["model"], cache_dir=cache_dir, base_url=settings.get("base_url"),
                                          api_key_env=settings.get("api_key_env", "OPENAI_API_KEY"))
    if backend == "finetuned":
        return simulation.FinetunedSimulator(settings["model"], device=device,
                                             dtype=settings.get("dtype", "bfloat16"),
                                             batch_size=settings.get("batch_size", 8))
    raise FeaturesError(f"features.simulator.backend: unknown backend {backend!r}; use embedding, openai or finetuned")


def sae_exemplars(hidden: torch.Tensor, tokens: pl.DataFrame, sae, layer: int, settings: ExemplarSettings,
                  seed: int, progress: bool = True) -> tuple[pl.DataFrame, dict]:
    """Exemplars of every SAE feature of one layer; features that never fire on eval text are dropped."""
    windows = make_windows(tokens, settings.width)
    found = exemplars(hidden, windows, sae.encode, sae.n_features, settings, seed, progress)
    alive = np.flatnonzero(found["max_activation"] > 0)
    kept = {key: value[alive] for key, value in found.items()}
    frame = exemplar_frame(layer, alive.tolist(), kept, settings.n_top)
    stats = {"layer": layer, "features": sae.n_features, "kept": int(len(alive)),
             "dropped_no_activation": int(sae.n_features - len(alive)), "windows": windows.height,
             "window_width": settings.width}
    return frame, stats


def neuronpedia_labels(explanations: pl.DataFrame, exemplar_table: pl.DataFrame, windows: pl.DataFrame,
                       simulator, n_top: int, max_scored: int | None = 200, seed: int = 0) -> pl.DataFrame:
    """One Neuronpedia description per feature (the first in file order), for every exported feature.

    Features without exemplars keep their label (they can train; they cannot be test features). The
    simulator scores a seeded sample of `max_scored` features with exemplars (all when None), for the
    labels' statistics; the other rows have null scores.
    """
    first = explanations.group_by(["layer", "feature"], maintain_order=True).first().sort(["layer", "feature"])
    with_ex = first.join(exemplar_table, on=["layer", "feature"], how="inner")
    keys = with_ex.select("layer", "feature").rows()
    if max_scored is not None and len(keys) > max_scored:
        keys = random.Random(seed).sample(keys, max_scored)
    scored = {}
    chosen = pl.DataFrame(keys, schema={"layer": pl.Int64, "feature": pl.Int64}, orient="row")
    for row in with_ex.join(chosen, on=["layer", "feature"], how="semi").iter_rows(named=True):
        ex = to_exemplars(row["windows"], row["activations"], windows)
        select, check = halves(n_top, len(ex))
        scored[(row["layer"], row["feature"])] = (simulator.score_many([row["description"]], [ex[i] for i in select])[0],
                                                  simulator.score_many([row["description"]], [ex[i] for i in check])[0])
    rows = []
    for layer, feature, description in first.select("layer", "feature", "description").iter_rows():
        score, checked = scored.get((layer, feature), (math.nan, math.nan))
        rows.append({"layer": layer, "feature": feature, "label": description, "score": _float(score),
                     "check_score": _float(checked), "random_candidate": None, "random_score": None,
                     "random_check_score": None, "candidates": [description], "candidate_scores": [float(score)]})
    return pl.DataFrame(rows, schema=LABELS_SCHEMA)


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
    from introspect.activations import bos_prefix, layer_outputs, pad_id

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
