"""The feature-description explainer: prompts, training examples, training and prediction (section 3, appendix D).

:data:`FEATURE_PROMPTS` holds the six appendix-D questions; one is drawn per training example (seeded), and
the explainer learns to answer with the feature's label.
"""

from __future__ import annotations

import hashlib
import json
import random
from typing import Sequence

import numpy as np
import polars as pl
import torch

from introspect.explainers.model import Encoded, EncodedPrompt, encode_answer, encode_prompt
from introspect.explainers.training import ExplainerData
from introspect.tensorfiles import RowFile

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


class FeatureItems(Sequence[Encoded]):
    """The encoded examples of feature rows, each encoded when it is asked for (a batch at a time).

    Holding 4M encoded examples as lists would take gigabytes; what is held is each row's layer, label and
    drawn question (one byte), and the tokenised prompt of each (question, layer), which all rows share.
    ``items[i]`` equals ``encode(tokenizer, question_i, label_i, chat)``.
    """

    def __init__(self, layers: np.ndarray, labels: Sequence[str | None] | None, questions: np.ndarray, tokenizer,
                 chat: bool) -> None:
        self.layers, self.labels, self.questions = layers, labels, questions
        self.tokenizer, self.chat = tokenizer, chat
        self._prompts: dict[tuple[int, int], EncodedPrompt] = {}

    def __len__(self) -> int:
        return len(self.layers)

    def _prompt(self, question: int, layer: int) -> EncodedPrompt:
        key = (question, layer)
        if key not in self._prompts:
            self._prompts[key] = encode_prompt(self.tokenizer, feature_question(FEATURE_PROMPTS[question], layer),
                                               self.chat)
        return self._prompts[key]

    def __getitem__(self, i: int) -> Encoded:
        label = self.labels[i] if self.labels is not None else None
        prompt = self._prompt(int(self.questions[i]), int(self.layers[i]))
        return encode_answer(self.tokenizer, prompt, label, self.chat)

    def digest(self) -> str:
        """What the examples are made of, for a checkpoint's fingerprint: the questions, layers, labels and chat
        flag, every distinct prompt's token ids and the tokenizer itself (its vocabulary, merges and template),
        so that a changed tokenizer or chat template never resumes onto other encodings."""
        digest = hashlib.sha256()
        digest.update(json.dumps([self.chat, FEATURE_PROMPTS]).encode())
        keys = np.unique(np.stack([np.asarray(self.questions, dtype=np.int64),
                                   np.asarray(self.layers, dtype=np.int64)], axis=1), axis=0) if len(self) else []
        for question, layer in keys:
            prompt = self._prompt(int(question), int(layer))
            digest.update(json.dumps([int(question), int(layer), list(prompt.input_ids)]).encode())
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        digest.update((backend.to_str() if backend is not None else repr(self.tokenizer.get_vocab())).encode())
        digest.update(str(getattr(self.tokenizer, "chat_template", None)).encode())
        digest.update(np.ascontiguousarray(self.questions, dtype=np.int8).tobytes())
        digest.update(np.ascontiguousarray(self.layers, dtype=np.int64).tobytes())
        digest.update(json.dumps(list(self.labels) if self.labels is not None else None).encode())
        return digest.hexdigest()


class FeatureVectors:
    """The float32 vectors of feature rows, read from a row file a batch at a time (``vectors[index]``)."""

    def __init__(self, file: RowFile, rows: np.ndarray) -> None:
        self.file, self.rows = file, np.asarray(rows, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index) -> torch.Tensor:
        return torch.from_numpy(self.file.take(self.rows[np.asarray(index, dtype=np.int64)]).astype(np.float32))

    def digest(self, budget_mb: int = 256) -> str:
        """sha256 of the rows' bytes, read a chunk of about `budget_mb` at a time (every rank reads the rows
        once when it starts: 33 GB at the paper's 4M features, well under a minute from local disk)."""
        digest = hashlib.sha256()
        chunk = max(1, budget_mb * 2**20 // (4 * self.file.shape[1]))
        for start in range(0, len(self.rows), chunk):
            digest.update(self.file.take(self.rows[start:start + chunk]).tobytes())
        return digest.hexdigest()


def feature_examples(df: pl.DataFrame, tokenizer, chat: bool, seed: int, with_targets: bool = True,
                     vectors: RowFile | None = None) -> ExplainerData:
    """Explainer examples of (vector, layer[, label]) rows: one appendix-D question drawn per row (seeded).

    The vectors are the table's ``vector`` column, or with `vectors` (a training table: ``row`` indexes the
    train vectors file) read from that file a batch at a time."""
    rng = random.Random(seed)
    questions = np.array([rng.randrange(len(FEATURE_PROMPTS)) for _ in range(df.height)], dtype=np.int8)
    labels = df["label"].to_list() if with_targets and "label" in df.columns else None
    layers = df["layer"].to_numpy()
    items = FeatureItems(layers, labels, questions, tokenizer, chat)
    if vectors is not None:
        source = FeatureVectors(vectors, df["row"].to_numpy())
    else:
        source = torch.from_numpy(df["vector"].to_numpy().copy()) if df.height else None
    return ExplainerData(items, source, layers.tolist())


def train_feature_explainer(train: pl.DataFrame, model_dir: str, out_dir: str, target_hidden: int, projection: str,
                            chat: bool, settings: dict, seed: int, device: str = "cpu",
                            projection_weights: dict[int, torch.Tensor] | None = None,
                            target_model: str | None = None, checkpoint_every: int = 0,
                            vectors: str | None = None) -> list[float]:
    """Fine-tune an explainer on (vector, layer, label) rows through the shared path
    (:func:`introspect.explainers.training.fit_explainer`).

    `vectors`: the train vectors file that the table's ``row`` column indexes (the feature_train table); without
    it the table holds a ``vector`` column.

    `target_model` (the target's model folder) is recorded in the checkpoint so that ``introspect describe``
    can read activations of new text from it."""
    from introspect.explainers.training import fit_explainer

    layers = tuple(sorted(set(train["layer"].to_list())))
    bank = RowFile(vectors) if vectors is not None else None
    return fit_explainer(train, model_dir, out_dir, lambda df, tok: feature_examples(df, tok, chat, seed, vectors=bank),
                         {"target_hidden": target_hidden, "layers": layers, "projection": projection, "chat": chat},
                         settings, seed, device, metadata={"task": "features", "target_model": target_model},
                         projection_weights=projection_weights, checkpoint_every=checkpoint_every)


def predict_features(items: pl.DataFrame, explainer_path: str, chat: bool, batch_size: int = 16,
                     max_new_tokens: int = 32, seed: int = 0, device: str = "cpu", dtype: str = "float32") -> list[str]:
    """Greedy descriptions of every item's vector with a trained checkpoint (`dtype`: compute.dtype)."""
    from introspect.explainers.generation import predict
    from introspect.explainers.model import load_explainer

    explainer = load_explainer(explainer_path, device=device)
    data = feature_examples(items, explainer.tokenizer, chat, seed, with_targets=False)
    return predict(explainer, data, batch_size, max_new_tokens, dtype)
