"""The feature-description explainer: prompts, training examples, training and prediction (section 3, appendix D).

:data:`FEATURE_PROMPTS` holds the six appendix-D questions; one is drawn per training example (seeded), and
the explainer learns to answer with the feature's label.
"""

from __future__ import annotations

import random

import polars as pl
import torch

from introspect.explainers.model import Encoded, encode
from introspect.explainers.training import ExplainerData

FEATURE_PROMPTS = (
    "At layer {layer}, {vector} encodes",
    "{vector} activates at layer {layer} for",
    "We can describe {vector} at layer {layer} as encoding",
    "Generate a description of this feature at layer {layer}: {vector}.",
    "What does {vector} mean at layer {layer}?",
    "{vector} activates at layer {layer} for inputs with the following features:",
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


def train_feature_explainer(train: pl.DataFrame, model_dir: str, out_dir: str, target_hidden: int, projection: str,
                            chat: bool, settings: dict, seed: int, device: str = "cpu",
                            projection_weights: dict[int, torch.Tensor] | None = None,
                            target_model: str | None = None, checkpoint_every: int = 0) -> list[float]:
    """Fine-tune an explainer on (vector, layer, label) rows through the shared path
    (:func:`introspect.explainers.training.fit_explainer`).

    `target_model` (the target's model folder) is recorded in the checkpoint so that ``introspect describe``
    can read activations of new text from it."""
    from introspect.explainers.training import fit_explainer

    layers = tuple(sorted(set(train["layer"].to_list())))
    return fit_explainer(train, model_dir, out_dir, lambda df, tok: feature_examples(df, tok, chat, seed),
                         {"target_hidden": target_hidden, "layers": layers, "projection": projection, "chat": chat},
                         settings, seed, device, metadata={"task": "features", "target_model": target_model},
                         projection_weights=projection_weights, checkpoint_every=checkpoint_every)


def predict_features(items: pl.DataFrame, explainer_path: str, chat: bool, batch_size: int = 16,
                     max_new_tokens: int = 32, seed: int = 0, device: str = "cpu") -> list[str]:
    """Greedy descriptions of every item's vector with a trained checkpoint."""
    from introspect.explainers.generation import predict
    from introspect.explainers.model import load_explainer

    explainer = load_explainer(explainer_path, device=device)
    data = feature_examples(items, explainer.tokenizer, chat, seed, with_targets=False)
    return predict(explainer, data, batch_size, max_new_tokens)
