"""The offline MiniLM simulator: sentence and token embeddings, and its scores against simulation_score."""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest
import torch

from introspect.scoring import simulators as simulation
from introspect.scoring.embedding import (
    MINILM_PACKAGE,
    EmbeddingError,
    EmbeddingSimulator,
    MiniLM,
    minilm_dir,
    pearson_rows,
)
from introspect.scoring.simulators import Exemplar

needs_minilm = pytest.mark.skipif(importlib.util.find_spec(MINILM_PACKAGE) is None,
                                  reason=f"the {MINILM_PACKAGE} package is not installed")


@pytest.fixture(scope="module")
def minilm():
    torch.set_num_threads(1)
    return MiniLM(batch_size=4)


def test_pearson_rows():
    true = np.array([0.0, 1.0, 2.0, -5.0])  # the negative value is clipped to 0, as in simulation_score
    predicted = np.array([[0.0, 1.0, 2.0, 0.0], [2.0, 1.0, 0.0, 2.0], [3.0, 3.0, 3.0, 3.0], [0.0, 1.0, 3.0, 0.5]])
    out = pearson_rows(predicted, true)
    assert out[:2].tolist() == pytest.approx([1.0, -1.0])
    assert math.isnan(out[2])  # a constant prediction has no correlation
    assert out[3] == pytest.approx(np.corrcoef(predicted[3], [0, 1, 2, 0])[0, 1])
    assert np.isnan(pearson_rows(predicted, np.zeros(4))).all()  # constant truth


def test_minilm_dir_names_the_missing_package():
    with pytest.raises(EmbeddingError, match="pip install no-such-embedder"):
        minilm_dir("no_such_embedder")


@needs_minilm
def test_sentence_embeddings_are_normalised_mean_pools(minilm):
    texts = ["the word \"cat\"", "A much longer sentence about the weather in Paris today."]
    out = minilm.sentences(texts)
    assert out.shape == (2, 384) and out.dtype == np.float32 and minilm.dim == 384
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    for i, text in enumerate(texts):  # by hand, one text at a time (no padding)
        enc = minilm.tokenizer([text], return_tensors="pt")
        with torch.no_grad():
            hidden = minilm.model(**enc).last_hidden_state[0]
        pooled = hidden.mean(0)
        np.testing.assert_allclose(out[i], (pooled / pooled.norm()).numpy(), atol=1e-5)
    assert not np.allclose(out[0], out[1])
    np.testing.assert_array_equal(minilm.sentences([texts[1]])[0], out[1])  # cached, same order
    assert minilm.sentences([]).shape == (0, 384)


@needs_minilm
def test_token_vectors_pool_the_overlapping_word_pieces(minilm):
    window = ["The", " cat", " ", " sat", " unbelievably", "."]
    vectors = minilm.token_vectors([window, ["Hello", " world"]])
    assert [v.shape for v in vectors] == [(6, 384), (2, 384)]
    norms = np.linalg.norm(vectors[0], axis=1)
    np.testing.assert_allclose(norms[[0, 1, 3, 4, 5]], 1.0, atol=1e-5)
    assert norms[2] == 0.0  # whitespace only: no word piece
    text = "".join(window)
    enc = minilm.tokenizer([text], return_tensors="pt", return_offsets_mapping=True)
    offsets = enc.pop("offset_mapping")[0].tolist()
    with torch.no_grad():
        hidden = minilm.model(**enc).last_hidden_state[0]
    start = text.index("unbelievably")
    pieces = [i for i, (s, e) in enumerate(offsets) if e > s and s >= start and e <= start + len("unbelievably")]
    assert len(pieces) >= 2  # a word of several word pieces
    expected = hidden[pieces].mean(0)
    np.testing.assert_allclose(vectors[0][4], (expected / expected.norm()).numpy(), atol=1e-5)


@needs_minilm
@pytest.mark.parametrize("correlation", ["concatenated", "per_exemplar"])
def test_score_many_equals_simulation_score_of_predict(minilm, correlation):
    sim = EmbeddingSimulator(minilm, correlation=correlation)
    exemplars = [
        Exemplar(("The", " cat", " sat", " on", " the", " mat", "."), (0, 1, 0, 0, 0, 0, 0)),
        Exemplar(("My", " cat", " likes", " fish"), (0, 1, 0, 0)),
        Exemplar(("Stock", " prices", " fell", " sharply", " today"), (0, 0, 0, 0, 0)),
        Exemplar(("A", " small", " cat", " and", " a", " dog"), (0, 0, 1, 0, 0, 0.5)),
    ]
    descriptions = ['the word "cat"', "financial news", "the end of a sentence", "animals"]
    sim.prepare([ex.tokens for ex in exemplars])
    scores = sim.score_many(descriptions, exemplars)
    assert scores.shape == (4,)
    for i, description in enumerate(descriptions):
        expected = simulation.simulation_score(sim.predict(description, exemplars), exemplars, correlation)
        assert scores[i] == pytest.approx(expected, abs=1e-6)
    assert scores[0] > scores[1] + 0.2 and scores[0] > scores[2] + 0.2
    assert sim.score(descriptions[0], exemplars) == pytest.approx(scores[0], abs=1e-6)
    assert math.isnan(sim.score_many(["x"], [])[0]) and sim.score_many([], exemplars).shape == (0,)



def test_batches_are_cut_in_a_fixed_order_not_the_sets_hash_order():
    # texts of equal length used to be batched in set order, which changes with the process's hash seed, and
    # a batch's padding changes the floats a little: label scores differed between two runs of one config
    seen = []

    def forward(texts, offsets=False):
        seen.append(list(texts))
        n, width = len(texts), max(len(t) for t in texts) + 2
        mapping = torch.tensor([[[i, i + 1] for i in range(width)]] * n)
        return torch.ones(n, width, 4), torch.ones(n, width, dtype=torch.long), mapping

    m = object.__new__(MiniLM)
    m.batch_size, m._sentences, m._tokens, m.model = 5, {}, {}, None
    m._forward = forward
    texts = [f"{chr(97 + i)}{chr(122 - i)}" for i in range(20)] + ["long text", "x"]  # twenty of length 2
    m.sentences(texts)
    assert sum(seen, []) == sorted(set(texts), key=lambda t: (len(t), t))
    seen.clear()
    windows = [[f" {w}"] for w in texts]
    m.token_vectors(windows)
    assert sum(seen, []) == ["".join(k) for k in sorted({tuple(w) for w in windows}, key=lambda k: (sum(map(len, k)), k))]


@needs_minilm
def test_per_exemplar_scores_differ_from_concatenated_and_skip_undefined_exemplars(minilm):
    exemplars = [Exemplar(("My", " cat", " likes", " fish"), (0, 1, 0, 0)),
                 Exemplar(("Stock", " prices", " fell"), (0, 0, 0)),  # never fires: no correlation
                 Exemplar(("A", " dog", " and", " a", " cat"), (0, 0.5, 0, 0, 1))]
    per = EmbeddingSimulator(minilm, correlation="per_exemplar").score_many(['the word "cat"', "animals"], exemplars)
    one = EmbeddingSimulator(minilm).score_many(['the word "cat"', "animals"], exemplars)
    by_hand = [np.mean([simulation.simulation_score([p], [ex]) for p, ex in zip(
        EmbeddingSimulator(minilm).predict(d, exemplars), exemplars) if ex.activations != (0, 0, 0)])
        for d in ('the word "cat"', "animals")]
    assert per.tolist() == pytest.approx(by_hand, abs=1e-6) and not np.allclose(per, one)
    assert math.isnan(EmbeddingSimulator(minilm, correlation="per_exemplar").score_many(["x"], exemplars[1:2])[0])
