"""Training and evaluation sets of the feature task (paper section 3.2, appendix E.1).

The labelled SAE features are split into the explainers' training pool and the held-out SAE eval set; the
ACT eval set holds residual-stream activations of corpus tokens, the dACT set activation differences of
counterfactual pairs, each with exemplars for the simulator.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import polars as pl
import torch
from tqdm.auto import tqdm

from introspect.groundtruth.activations import usable_rows
from introspect.groundtruth.exemplars import ExemplarSettings, FeaturesError, _nested, exemplars, make_windows
from introspect.schemas import read_columns, read_schema
from introspect.tensorfiles import RowFileWriter, chunk_rows

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


@dataclasses.dataclass(frozen=True)
class LayerFiles:
    """The feature tables of one layer that the split reads."""

    labels: str | Path      # feature_labels
    features: str | Path    # feature_vectors (the SAE's unit decoder directions)
    exemplars: str | Path   # feature_exemplars


def _layer_split(files: LayerFiles, n_test: int, seed: int) -> tuple[int, pl.DataFrame, list[int], int]:
    """(layer, train keys in the SAE file's order, sorted test features, vector width) of one layer, the test
    features drawn with seed + layer: read from the tables' key columns only, no vectors."""
    labels = read_columns(files.labels, "feature_labels", ["layer", "feature", "label", "score"])
    keys = read_columns(files.features, "feature_vectors", ["layer", "feature"])
    width = read_schema(files.features)["vector"].size
    if keys["feature"].n_unique() != keys.height:
        raise FeaturesError(f"{files.features}: a feature appears twice; delete it and re-run features_sae")
    layer = int(labels["layer"][0]) if labels.height else -1
    joined = keys.join(labels, on=["layer", "feature"], how="inner", maintain_order="left")
    with_exemplars = read_columns(files.exemplars, "feature_exemplars", ["layer", "feature"])
    scorable = joined.join(with_exemplars, on=["layer", "feature"], how="semi")["feature"].sort().to_list()
    if len(scorable) <= n_test:
        raise FeaturesError(f"layer {layer}: {len(scorable)} labelled features with exemplars cannot hold out "
                            f"{n_test}; lower features.split.n_test")
    test = sorted(random.Random(seed + layer).sample(scorable, n_test))
    train = joined.filter(~pl.col("feature").is_in(test)).select("layer", "feature", "label", "score")
    return layer, train, test, width


def _vector_batches(path: str | Path, rows: int):
    """(features, float32 vectors) of a feature_vectors table, a row group (or `rows`) at a time."""
    import pyarrow.parquet as pq

    with pq.ParquetFile(path) as parquet:
        for group in range(parquet.num_row_groups):
            table = parquet.read_row_group(group, columns=["feature", "vector"], use_threads=False)
            for batch in table.to_batches(max_chunksize=rows):
                vectors = batch.column("vector")
                flat = vectors.flatten().to_numpy(zero_copy_only=False)
                yield batch.column("feature").to_numpy(), flat.reshape(-1, vectors.type.list_size)
            del table


def split_feature_files(files: Sequence[LayerFiles], n_test: int, seed: int, vectors_path: str | Path,
                        budget_mb: int = 1024, progress: bool = True) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Hold out `n_test` labelled features per layer (seeded: layer l draws with seed + l) as the SAE eval set;
    the rest is the training pool.

    Returns the train table (schema ``feature_train``: no vectors; ``row`` indexes `vectors_path`) and the test
    table (``feature_eval``). The training vectors go to `vectors_path` in float16 as they stream from the SAE
    tables, one row group at a time: memory is the train table's keys and labels (the output; ~100 bytes a
    feature) and one row group of vectors, never all N vectors. Test features are drawn among those with exemplars (they are scored by the simulator); a
    labelled feature without exemplars (possible with Neuronpedia labels) can still train.
    """
    plans = [_layer_split(f, n_test, seed) for f in files]
    widths = {plan[3] for plan in plans}
    if len(widths) != 1:
        raise FeaturesError(f"the layers' SAE vectors have different sizes {sorted(widths)}")
    width = widths.pop()
    trains, tests, offset = [], [], 0
    total = sum(plan[1].height for plan in plans)
    with RowFileWriter(vectors_path, total, width, "float16", metadata={"what": "training feature vectors"}) as out:
        bar = tqdm(total=sum(plan[1].height + len(plan[2]) for plan in plans), desc="split", unit="vector",
                   disable=not progress)
        for f, (layer, train, test, _) in zip(files, plans):
            train_ids, test_ids = train["feature"].to_numpy(), np.asarray(test, dtype=np.int64)
            written, test_vectors = 0, {}
            for features, vectors in _vector_batches(f.features, chunk_rows(width, budget_mb)):
                keep = np.isin(features, train_ids)
                if not np.array_equal(features[keep], train_ids[written:written + int(keep.sum())]):
                    raise FeaturesError(f"{f.features}: the vectors changed while the split read them")
                out.write(vectors[keep].astype(np.float16))
                written += int(keep.sum())
                held_out = np.flatnonzero(np.isin(features, test_ids))
                for i in held_out:
                    test_vectors[int(features[i])] = vectors[i].copy()
                bar.update(int(keep.sum()) + len(held_out))
            if written != train.height or len(test_vectors) != len(test):
                raise FeaturesError(f"{f.features}: {written} of {train.height} training and {len(test_vectors)} of "
                                    f"{len(test)} test vectors found; delete it and re-run features_sae")
            trains.append(train.with_columns(pl.Series("row", np.arange(offset, offset + written, dtype=np.int64))))
            offset += written
            tests.append(_test_items(f, layer, test, test_vectors))
        bar.close()
    item_id = (pl.lit("L") + pl.col("layer").cast(pl.String) + pl.lit("/f") + pl.col("feature").cast(pl.String))
    train = pl.concat(trains).select(item_id.alias("item_id"), "layer", "feature", "row", "label", "score")
    return train, pl.concat(tests)


def _first_layer(files: LayerFiles) -> int:
    layers = read_columns(files.labels, "feature_labels", ["layer"])["layer"]
    return int(layers[0]) if len(layers) else -1


def _test_items(files: LayerFiles, layer: int, test: list[int], vectors: dict[int, np.ndarray]) -> pl.DataFrame:
    """The held-out features of one layer as eval items (schema ``feature_eval``), sorted by feature."""
    labels = pl.scan_parquet(files.labels).filter(pl.col("feature").is_in(test)).select("feature", "label")
    exemplar_rows = (pl.scan_parquet(files.exemplars).filter(pl.col("feature").is_in(test))
                     .select("feature", "windows", "kinds", "activations"))
    items = labels.join(exemplar_rows, on="feature", how="inner").sort("feature").collect()
    width = len(next(iter(vectors.values())))
    stacked = np.stack([vectors[int(f)] for f in items["feature"].to_list()]).astype(np.float32)
    return items.select(
        (pl.lit(f"L{layer}/f") + pl.col("feature").cast(pl.String)).alias("item_id"),
        pl.lit(layer, dtype=pl.Int64).alias("layer"),
        pl.Series("vector", stacked).cast(pl.Array(pl.Float32, width)),
        "label", (pl.lit("sae feature ") + pl.col("feature").cast(pl.String)).alias("source"),
        "windows", "kinds", "activations")


def sample_features(files: Sequence[LayerFiles], n: int, seed: int) -> pl.DataFrame:
    """`n` (layer, feature) keys drawn (seeded) among the labelled features with exemplars of every layer."""
    keys = []
    for f in files:
        labelled = read_columns(f.labels, "feature_labels", ["layer", "feature"])
        with_exemplars = read_columns(f.exemplars, "feature_exemplars", ["layer", "feature"])
        keys.append(labelled.join(with_exemplars, on=["layer", "feature"], how="semi"))
    keys = pl.concat(keys).sort(["layer", "feature"])
    rng = random.Random(seed)
    return keys[sorted(rng.sample(range(keys.height), min(n, keys.height)))]


def sample_rows(files: Sequence[LayerFiles], picks: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The labels and exemplars of the picked features, read from each layer's tables with a row filter that
    polars pushes into the Parquet scan (row groups without a picked feature are skipped, not read whole)."""
    labels, exemplar_rows = [], []
    for f in files:
        layer = _first_layer(f)
        wanted = picks.filter(pl.col("layer") == layer)["feature"].to_list()
        keep = (pl.col("layer") == layer) & pl.col("feature").is_in(wanted)
        labels.append(pl.scan_parquet(f.labels).filter(keep).collect())
        exemplar_rows.append(pl.scan_parquet(f.exemplars).filter(keep).collect())
    return pl.concat(labels), pl.concat(exemplar_rows)


def sample_markdown(labels: pl.DataFrame, exemplar_table: pl.DataFrame, windows: pl.DataFrame, n_show: int = 3) -> str:
    """A readable sample of labels (the sampled features' rows) with their top exemplars (the peak token in
    bold)."""
    table = labels.join(exemplar_table, on=["layer", "feature"])
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
