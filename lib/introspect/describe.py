"""Feature-description explainers, baselines and the LM judge (paper section 3, appendix A.2, D, F.1).

- :data:`FEATURE_PROMPTS`: the six appendix-D questions; one is drawn per training example (seeded), and the
  explainer learns to answer with the feature's label.
- :func:`nearest_neighbour`: the NN-all / NN-layer baselines — the label of the training feature with the
  largest dot product with v (over all layers, or over v's layer only).
- Judges: :class:`EmbeddingJudge` (offline: MiniLM cosine of predicted and gold description, mapped onto
  the judge's five-step scale with thresholds calibrated on the A.2 prompt's own five examples) and
  :class:`OpenAIJudge` (the A.2 prompt verbatim on any OpenAI-compatible server, cached and retried like the
  OpenAI simulator). Both return (rating - 1) / 4 in {0, .25, .5, .75, 1}, or None for an invalid reply.
"""

from __future__ import annotations

import logging
import math
import random
import re
from typing import Sequence

import numpy as np
import polars as pl
import torch

from introspect.explainer import Encoded, encode
from introspect.training import ExplainerData

log = logging.getLogger(__name__)

FEATURE_PROMPTS = (
    "At layer {layer}, {vector} encodes",
    "{vector} activates at layer {layer} for",
    "We can describe {vector} at layer {layer} as encoding",
    "Generate a description of this feature at layer {layer}: {vector}.",
    "What does {vector} mean at layer {layer}?",
    "{vector} activates at layer {layer} for inputs with the following features:",
)

JUDGE_PROMPT = """Does this feature description accurately describe when this feature activates?
 Rate on a scale of:
 - 1 = completely unrelated to expected
 - 2 = mostly unrelated
 - 3 = somewhat related
 - 4 = related and fairly similar
 - 5 = same as expected, or highly similar (treat this as a correct match)

If unsure between 4 and 5, choose 5.

Examples:

Predicted: mentions of cooking recipes
 Expected: references to financial transactions
 Correct rating: 1

Predicted: mentions of dogs and cats
 Expected: references to farm animals
 Correct rating: 2

Predicted: mentions of sunny weather and rain
 Expected: references to climate conditions
 Correct rating: 3

Predicted: mentions of jazz musicians and concerts
 Expected: references to music
 Correct rating: 4

Predicted: mentions of Shakespeare's plays
 Expected: references to works by Shakespeare

Correct rating: 5

Now rate the following pair:
Predicted: {predicted}
Expected: {expected}
"""

#: The A.2 prompt's own examples, (predicted, expected, rating): the embedding judge is calibrated on them.
JUDGE_EXAMPLES = (
    ("mentions of cooking recipes", "references to financial transactions", 1),
    ("mentions of dogs and cats", "references to farm animals", 2),
    ("mentions of sunny weather and rain", "references to climate conditions", 3),
    ("mentions of jazz musicians and concerts", "references to music", 4),
    ("mentions of Shakespeare's plays", "references to works by Shakespeare", 5),
)


def feature_question(template: str, layer: int) -> str:
    return template.replace("{layer}", str(layer))


def feature_examples(df: pl.DataFrame, tokenizer, chat: bool, seed: int, with_targets: bool = True) -> ExplainerData:
    """Explainer examples of (vector, layer[, label]) rows: one appendix-D question drawn per row (seeded)."""
    rng = random.Random(seed)
    items: list[Encoded] = []
    for layer, label in zip(df["layer"].to_list(), df["label"].to_list() if "label" in df.columns else [None] * df.height):
        question = feature_question(rng.choice(FEATURE_PROMPTS), layer)
        items.append(encode(tokenizer, question, label if with_targets else None, chat))
    vectors = torch.from_numpy(df["vector"].to_numpy().copy()) if df.height else None
    return ExplainerData(items, vectors, df["layer"].to_list())


def nearest_neighbour(train: pl.DataFrame, items: pl.DataFrame, per_layer: bool) -> list[str]:
    """The label of the training feature with the largest <v_train, v> (NN-all; NN-layer: same layer only)."""
    if train.height == 0:
        raise ValueError("the nearest-neighbour baseline needs training features; the training pool is empty")
    bank = torch.from_numpy(train["vector"].to_numpy().copy()).float()
    labels = train["label"].to_list()
    layers = torch.tensor(train["layer"].to_list())
    queries = torch.from_numpy(items["vector"].to_numpy().copy()).float()
    scores = queries @ bank.T
    if per_layer:
        same = torch.tensor(items["layer"].to_list())[:, None] == layers[None, :]
        if not bool(same.any(1).all()):
            missing = sorted(set(items["layer"].to_list()) - set(train["layer"].to_list()))
            raise ValueError(f"NN-layer: no training feature at layer(s) {missing}")
        scores = scores.masked_fill(~same, -math.inf)
    return [labels[i] for i in scores.argmax(1).tolist()]


def parse_rating(text: str | None) -> int | None:
    """The judge's rating: the last integer 1-5 in the reply (after 'rating', when the reply says so)."""
    if not text:
        return None
    found = re.findall(r"(?<![\d.])([1-5])(?!\d|\.\d)", text)
    return int(found[-1]) if found else None


def rating_score(rating: int | None) -> float | None:
    return None if rating is None else (rating - 1) / 4


class EmbeddingJudge:
    """Offline judge: MiniLM cosine of the two descriptions, thresholded into ratings 1-5.

    The four thresholds sit halfway between the cosines of consecutive A.2 examples (sorted by rating), so the
    judge rates the prompt's own examples as the prompt says; when those cosines are not increasing, the
    thresholds are spread evenly between the lowest and highest example cosine.
    """

    def __init__(self, embedder=None):
        from introspect.embedding import MiniLM

        self.embedder = embedder or MiniLM()
        cos = self.cosines([p for p, _, _ in JUDGE_EXAMPLES], [e for _, e, _ in JUDGE_EXAMPLES])
        if np.all(np.diff(cos) > 0):
            self.thresholds = (cos[:-1] + cos[1:]) / 2
        else:
            self.thresholds = np.linspace(cos.min(), cos.max(), 6)[1:-1]
        log.info("embedding judge thresholds %s (A.2 example cosines %s)", np.round(self.thresholds, 3),
                 np.round(cos, 3))

    def cosines(self, predicted: Sequence[str], expected: Sequence[str]) -> np.ndarray:
        a = self.embedder.sentences([p or "" for p in predicted])
        b = self.embedder.sentences([e or "" for e in expected])
        return (a * b).sum(1)

    def ratings(self, predicted: Sequence[str], expected: Sequence[str]) -> list[int]:
        return [1 + int(np.searchsorted(self.thresholds, c, side="right")) for c in self.cosines(predicted, expected)]

    def scores(self, predicted: Sequence[str], expected: Sequence[str]) -> list[float | None]:
        return [rating_score(r) for r in self.ratings(predicted, expected)]


class OpenAIJudge:
    """The A.2 prompt on an OpenAI-compatible server; requests cached and retried as in OpenAISimulator."""

    def __init__(self, model: str = "gpt-4.1-mini", *, cache_dir, base_url: str | None = None,
                 api_key_env: str | None = "OPENAI_API_KEY", **options):
        from introspect.simulation import OpenAISimulator

        self.model = model
        self._client = OpenAISimulator(model, cache_dir=cache_dir, base_url=base_url, api_key_env=api_key_env,
                                       **options)
        self.invalid_replies = 0

    def scores(self, predicted: Sequence[str], expected: Sequence[str]) -> list[float | None]:
        from introspect.simulation import completion_content

        out = []
        for p, e in zip(predicted, expected):
            request = {"model": self.model, "temperature": 0.0,
                       "messages": [{"role": "user", "content": JUDGE_PROMPT.format(predicted=p, expected=e)}]}
            body, path = self._client._cached_reply(request)
            rating = parse_rating(completion_content(body))
            if rating is None:
                self.invalid_replies += 1
                log.warning("invalid judge reply (stored in %s)", path)
            out.append(rating_score(rating))
        return out

    @property
    def http_requests(self) -> int:
        return self._client.http_requests

    @property
    def cache_hits(self) -> int:
        return self._client.cache_hits



def per_layer_sample(train: pl.DataFrame, n_per_layer: int | None, seed: int) -> pl.DataFrame:
    """At most `n_per_layer` training features of each layer (seeded): the x-axis of Figures 5 and 7."""
    if n_per_layer is None:
        return train
    parts = []
    for offset, layer in enumerate(sorted(set(train["layer"].to_list()))):
        rows = train.filter(pl.col("layer") == layer)
        parts.append(rows if rows.height <= n_per_layer else rows.sample(n=n_per_layer, seed=seed + offset))
    return pl.concat(parts)


def train_feature_explainer(train: pl.DataFrame, model_dir: str, out_dir: str, target_hidden: int, projection: str,
                            chat: bool, settings: dict, seed: int, device: str = "cpu",
                            projection_weights: dict[int, torch.Tensor] | None = None,
                            target_model: str | None = None) -> list[float]:
    """Fine-tune an explainer on (vector, layer, label) rows through the shared path (DESIGN 3.4).

    `target_model` (the target's model folder) is recorded in the checkpoint so that ``introspect describe``
    can read activations of new text from it."""
    from introspect.causal import fit_explainer

    layers = tuple(sorted(set(train["layer"].to_list())))
    return fit_explainer(train, model_dir, out_dir, lambda df, tok: feature_examples(df, tok, chat, seed),
                         {"target_hidden": target_hidden, "layers": layers, "projection": projection, "chat": chat},
                         settings, seed, device, metadata={"task": "features", "target_model": target_model},
                         projection_weights=projection_weights)


def predict_features(items: pl.DataFrame, explainer_path: str, chat: bool, batch_size: int = 16,
                     max_new_tokens: int = 32, seed: int = 0, device: str = "cpu") -> list[str]:
    """Greedy descriptions of every item's vector with a trained checkpoint."""
    from introspect.causal import predict
    from introspect.explainer import load_explainer

    explainer = load_explainer(explainer_path, device=device)
    data = feature_examples(items, explainer.tokenizer, chat, seed, with_targets=False)
    return predict(explainer, data, batch_size, max_new_tokens)


# ----------------------------------------------------------------------------------------------
# scoring and Table 1

TABLE1_METRICS = ("sae_judge", "sae_simulator", "act_simulator", "dact_simulator")


def simulator_scores(items: pl.DataFrame, candidates: Sequence[Sequence[str]], windows: pl.DataFrame, simulator,
                     n_top: int) -> list[float]:
    """Simulator score of each item's description on the item's *check* half of exemplars (the best of its
    candidates when it has several, as SelfIE's scales).

    The check half (odd ranks of the top and of the random windows; :func:`introspect.features.halves`) is
    used for every method and eval set, because the gold SAE labels were chosen on the even half: scoring
    them there would flatter them. The absolute value of the correlation is kept, as the authors' evaluation
    code does (REFERENCE.md); an undefined correlation (a constant prediction) scores 0.
    """
    from introspect.features import halves, to_exemplars

    if hasattr(simulator, "prepare"):  # embed every window the items use in large batches, once
        needed = sorted({int(w) for ids in items["windows"].to_list() for w in ids})
        simulator.prepare([windows["tokens"][w].to_list() for w in needed])
    out = []
    for texts, window_ids, acts in zip(candidates, items["windows"].to_list(), items["activations"].to_list()):
        ex = to_exemplars(window_ids, acts, windows)
        _, check = halves(n_top, len(ex))
        scores = simulator.score_many([t or "" for t in texts], [ex[i] for i in check])
        out.append(max(0.0 if math.isnan(float(v)) else abs(float(v)) for v in scores))
    return out


def candidate_texts(items: pl.DataFrame, predictions: pl.DataFrame, source: str = "predictions") -> list[list[str]]:
    """Each item's candidate descriptions, in item order: one per item for a trained explainer or a baseline,
    several for SelfIE (one per scale, marked by a ``candidate`` column)."""
    grouped: dict[str, list[str]] = {}
    for item_id, text in zip(predictions["item_id"].to_list(), predictions["prediction"].to_list()):
        grouped.setdefault(item_id, []).append(text)
    wanted = items["item_id"].to_list()
    if set(grouped) != set(wanted) or ("candidate" not in predictions.columns and predictions.height != len(wanted)):
        raise ValueError(f"{source} does not describe exactly the eval set's {len(wanted)} items; re-run its rule")
    return [grouped[i] for i in wanted]


def judge_best(judge, candidates: Sequence[Sequence[str]], expected: Sequence[str]) -> list[float | None]:
    """Per item, the judge's best score over its candidates (one judge call for all texts); None when every
    reply for the item was invalid. With one candidate per item this is the judge's score; for SelfIE it is
    the paper's best-of-5 upper bound."""
    flat = [t for texts in candidates for t in texts]
    values = judge.scores(flat, [e for texts, e in zip(candidates, expected) for _ in texts])
    out, start = [], 0
    for texts in candidates:
        valid = [v for v in values[start:start + len(texts)] if v is not None]
        out.append(max(valid) if valid else None)
        start += len(texts)
    return out


def answer_diversity(predictions: pl.DataFrame, items: pl.DataFrame) -> dict[str, int]:
    """How many different descriptions a method gave for the held-out SAE items, and how many equal the gold
    label (whitespace and case ignored): a collapsed explainer (one answer for every vector, which the
    embedding judge still credits when the answer has the labels' form) shows up here, not in the means."""
    def norm(text):
        return " ".join(str(text).split()).lower()

    gold = dict(zip(items["item_id"].to_list(), items["label"].to_list()))
    answers = predictions.select("item_id", "prediction").unique("item_id", keep="first", maintain_order=True)
    missing = set(gold) - set(answers["item_id"].to_list())
    if missing:
        raise ValueError(f"{len(missing)} held-out items have no prediction (e.g. {sorted(missing)[0]}); rebuild "
                         "the method's predictions")
    answers = answers.filter(pl.col("item_id").is_in(list(gold)))
    ids, texts = answers["item_id"].to_list(), [norm(t) for t in answers["prediction"].to_list()]
    return {"items": len(ids), "distinct": len(set(texts)),
            "exact": sum(t == norm(gold[i]) for i, t in zip(ids, texts))}


def table1_frame(scores: pl.DataFrame, alpha: float = 0.05, metrics: Sequence[str] = TABLE1_METRICS) -> pl.DataFrame:
    """Table 1 from long per-item scores (row, item_id, metric, value): mean +- SE x 100 per row and metric,
    best by paired t-test among the rows that have the metric (gold labels have SAE columns only)."""
    from introspect.tables import build_metric_table

    rows = list(dict.fromkeys(scores["row"].to_list()))
    table = pl.DataFrame({"row": rows})
    for metric in metrics:
        part = scores.filter(pl.col("metric") == metric)
        if part.height == 0:
            continue
        built = build_metric_table(part, [metric], scale=100.0, alpha=alpha).drop("n")
        table = table.join(built, on="row", how="left", maintain_order="left")
    return table
