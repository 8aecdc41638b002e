"""Feature labels (paper equation 2, appendix E.1): the simulator's argmax over candidate descriptions.

Every candidate description is scored by the simulator on the feature's *select* half of exemplars and the
best is kept; its score is also measured on the *check* half, next to the score of a random candidate on the
same half. With published SAEs the labels are Neuronpedia's explanations instead (:func:`neuronpedia_labels`).
"""

from __future__ import annotations

import logging
import math
import random
from collections import Counter
from importlib import resources
from typing import Sequence

import numpy as np
import polars as pl
from tqdm.auto import tqdm

from introspect.groundtruth.exemplars import halves, to_exemplars
from introspect.schemas import FEATURE_LABELS
from introspect.scoring.simulators import Exemplar

log = logging.getLogger(__name__)


LABELS_SCHEMA = FEATURE_LABELS  # the labels table as introspect.schemas documents it


def concepts() -> list[str]:
    """The project's curated concept descriptions (lib/introspect/data/concepts.txt)."""
    text = resources.files("introspect").joinpath("data/concepts.txt").read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


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
