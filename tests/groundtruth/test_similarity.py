"""Activation similarity (Table 5): layer mapping, token alignment, the projection, a model against itself."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch
from conftest import tiny_llama

from introspect.groundtruth.activations import INPUT_LAYER, cache_layer, tokenize_corpus
from introspect.groundtruth.exemplars import make_windows
from introspect.groundtruth.similarity import (
    activation_similarity,
    align,
    aligned_activations,
    fit_projection,
    pretrained_projections,
    r_squared,
    relative_layer,
)
from introspect.models.loading import load_model

TEXTS = [
    "The cat sat on the mat. It was a sunny day, and the cat was happy to sit there for hours.",
    "Paris is the capital of France. Rome is the capital of Italy, and Madrid is the capital of Spain.",
    "Numbers such as 12, 345 and 6789 appear in tables; words like unbelievable split into pieces.",
    "A fourth short document about rivers, mountains and the long roads between old towns.",
]


def test_relative_layer():
    # output of target block 15 of 30 is 16/30 deep; explainer block 9 of 18 ends 10/18 deep (closest)
    assert relative_layer(15, 30, 18) == 9
    assert relative_layer(0, 30, 18) == 0
    assert relative_layer(29, 30, 18) == 17
    assert relative_layer(11, 12, 24) == 23
    assert relative_layer(0, 12, 24) == 1
    assert [relative_layer(l, 30, 30) for l in range(30)] == list(range(30))
    assert [relative_layer(l, 4, 2) for l in range(4)] == [0, 0, 1, 1]


def test_align():
    # target "Hel" "lo" " wor" "ld" against explainer "Hello" " world"
    assert align([3, 5, 9, 11], [(0, 5), (5, 11)]).tolist() == [0, 0, 1, 1]
    # explainer tokens "He" and "world" leave "l", "lo" and " " uncovered
    assert align([3, 5, 6, 11], [(0, 2), (6, 11)]).tolist() == [-1, -1, -1, 1]
    assert align([1, 2, 3], [(0, 1), (1, 2), (2, 3)]).tolist() == [0, 1, 2]
    assert align([4], []).tolist() == [-1]


def test_fit_projection_recovers_a_linear_map():
    g = torch.Generator().manual_seed(0)
    source = torch.randn(300, 6, generator=g)
    w = torch.randn(6, 4, generator=g)
    target = source @ w
    exact = fit_projection(source, target, ridge=0.0)
    assert exact.shape == (6, 4)  # no bias row: Pi_l is a plain linear map, as the explainer applies it
    torch.testing.assert_close(exact, w, atol=1e-4, rtol=1e-4)
    ridged = fit_projection(source, target)  # the default ridge shrinks a little
    torch.testing.assert_close(ridged, w, atol=2e-2, rtol=2e-2)
    assert r_squared(source @ exact, target) == pytest.approx(1.0, abs=1e-6)
    assert r_squared(torch.zeros_like(target) + target.mean(0), target) == pytest.approx(0.0, abs=1e-6)


class BosTokenizer:
    """SmolLM2's tokenizer made to add a BOS token (like Gemma's) to plain text."""

    def __init__(self, base):
        self.base = base
        self.bos_token_id, self.pad_token_id = base.bos_token_id, base.pad_token_id

    def __call__(self, text, add_special_tokens=True, **kwargs):
        enc = self.base(text, add_special_tokens=False, **kwargs)
        if add_special_tokens:
            enc["input_ids"] = [self.bos_token_id] + list(enc["input_ids"])
        return enc


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, smollm2_tokenizer_dir):
    torch.set_num_threads(1)
    out = tiny_llama(tmp_path_factory.mktemp("similarity") / "tiny", smollm2_tokenizer_dir, n_layers=2, seed=7)
    model, tokenizer, _ = load_model(out)
    return model, tokenizer


def setup(model, tokenizer, layers=(0, 1), texts=TEXTS):
    corpus = pl.DataFrame({"doc_id": [f"d{i}" for i in range(len(texts))], "split": ["eval"] * len(texts),
                           "text": texts})
    tokens = tokenize_corpus(corpus, tokenizer, seq_len=64)
    hiddens = {l: cache_layer(model, tokenizer, tokens, l, progress=False)["hidden"] for l in layers}
    windows = make_windows(tokens, 6)
    rows = windows["rows"].to_list()
    g = torch.Generator().manual_seed(1)
    feature_windows = {l: [(torch.randn(64, generator=g).numpy(), [np.asarray(r) for r in rows[i::3]])
                           for i in range(3)] for l in layers}
    return tokens, hiddens, feature_windows


def test_a_model_against_itself_is_fully_similar(tiny):
    model, tokenizer = tiny
    tokens, hiddens, feature_windows = setup(model, tokenizer)
    results = activation_similarity(hiddens.__getitem__, tokens, [0, 1, 2, 3], model, tokenizer, {0: 0, 1: 1}, feature_windows,
                                    progress=False)
    assert [(r["layer"], r["explainer_layer"], r["projection"]) for r in results] == [(0, 0, "none"), (1, 1, "none")]
    for r in results:
        assert r["dot_mean"] == pytest.approx(1.0, abs=1e-4) and r["dot_sd"] < 1e-3
        assert r["tokens"] == tokens.height - 4  # every token but the first of each sequence
        assert r["features"] == 3 and r["pattern_mean"] == pytest.approx(1.0, abs=1e-4)
        assert r["projection_r2"] is None
    # fewer sequences: fewer tokens
    some = activation_similarity(hiddens.__getitem__, tokens, [1], model, tokenizer, {1: 1}, {}, progress=False)
    assert some[0]["tokens"] == tokens.filter(pl.col("seq_id") == 1).height - 1 and some[0]["features"] == 0
    # another layer of the explainer is less similar
    shifted = activation_similarity(hiddens.__getitem__, tokens, [0, 1, 2, 3], model, tokenizer, {1: 0}, feature_windows,
                                    progress=False)
    assert shifted[0]["dot_mean"] < 0.99


def test_the_similarity_goes_through_the_given_projection_and_fits_nothing(tiny):
    """Pi_l (target -> explainer, no bias) is applied as given: a rotation of the target's space that Pi_l
    undoes gives full similarity; a random Pi_l does not; no map is fitted on the measured text (issue 18.4:
    a least-squares map with a bias fitted on the eval text measured decodability, not the explainer's map)."""
    model, tokenizer = tiny
    tokens, hiddens, feature_windows = setup(model, tokenizer, layers=(1,))
    d = hiddens[1].shape[1]
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(3)))
    rotated = {1: hiddens[1].float() @ q.T}  # a "target" whose space is a rotation of the explainer's
    rotated_windows = {1: [((q @ torch.as_tensor(v)).numpy(), w) for v, w in feature_windows[1]]}
    seqs = [0, 1, 2, 3]
    undone = activation_similarity(rotated.__getitem__, tokens, seqs, model, tokenizer, {1: 1}, rotated_windows,
                                   projections={1: q.T.contiguous()}, projection="run's Pi_l", progress=False)[0]
    assert undone["projection"] == "run's Pi_l" and undone["tokens"] == tokens.height - 4  # every sequence
    assert undone["dot_mean"] == pytest.approx(1.0, abs=1e-3) and undone["pattern_mean"] == pytest.approx(1.0, abs=1e-3)
    random = torch.randn(d, d, generator=torch.Generator().manual_seed(4))
    off = activation_similarity(rotated.__getitem__, tokens, seqs, model, tokenizer, {1: 1}, rotated_windows,
                                projections={1: random}, projection="random", progress=False)[0]
    assert off["dot_mean"] < 0.5 and off["pattern_mean"] < 0.9
    with pytest.raises(ValueError, match="needs a projection"):
        activation_similarity({1: hiddens[1][:, :-1]}.__getitem__, tokens, seqs, model, tokenizer, {1: 1}, {},
                              progress=False)
    with pytest.raises(KeyError, match="no projection Pi_l for target layer 1"):
        activation_similarity(rotated.__getitem__, tokens, seqs, model, tokenizer, {1: 1}, {}, projections={0: q},
                              progress=False)


def test_a_bos_explainer_keeps_its_first_content_token(tiny):
    model, base = tiny
    tokenizer = BosTokenizer(base)
    tokens, hiddens, feature_windows = setup(model, tokenizer)
    assert tokens["position"].min() == 1  # the BOS is position 0
    results = activation_similarity(hiddens.__getitem__, tokens, [0, 1, 2, 3], model, tokenizer, {0: 0, 1: 1},
                                    feature_windows, progress=False)
    for r in results:
        assert r["tokens"] == tokens.height  # no token is an attention sink: every one is compared
        assert r["dot_mean"] == pytest.approx(1.0, abs=1e-4)
        assert r["pattern_mean"] == pytest.approx(1.0, abs=1e-4)


def test_a_projection_aligned_to_the_input_embedding_targets_the_token_embeddings(tiny):
    model, tokenizer = tiny
    texts = [" ".join(TEXTS[i:] + TEXTS[:i]) for i in range(4)] * 2
    tokens, hiddens, _ = setup(model, tokenizer, layers=(1,), texts=texts)
    seqs = tokens["seq_id"].unique().to_list()
    pairs, _, rows = aligned_activations(hiddens.__getitem__, tokens, seqs, model, tokenizer, {1: INPUT_LAYER},
                                         progress=False)
    h_m, h_e = pairs[1]
    ids = torch.tensor(tokens["token_id"].to_numpy()[rows])
    with torch.no_grad():
        torch.testing.assert_close(h_e, model.get_input_embeddings()(ids).half().float())
    torch.testing.assert_close(h_m, hiddens[1][torch.from_numpy(rows)].float())
    weights, stats = pretrained_projections(hiddens.__getitem__, tokens, seqs, model, tokenizer, {1: INPUT_LAYER},
                                            progress=False)
    assert weights[1].shape == (64, 64) and stats[1]["explainer_layer"] == INPUT_LAYER
    assert stats[1]["fit_tokens"] + stats[1]["eval_tokens"] == len(rows)
