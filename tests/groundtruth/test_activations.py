"""Tokens table and activation cache: token texts and positions, sequence cuts, the hooked layer output."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import polars as pl
import pytest
import torch
import transformers
from conftest import tiny_llama

from introspect.groundtruth.activations import (
    INPUT_LAYER,
    TOKENS_SCHEMA,
    ActivationError,
    bos_prefix,
    cache_layer,
    layer_outputs,
    load_cache,
    save_cache,
    sequences,
    tokenize_corpus,
    usable_rows,
)
from introspect.models.loading import load_model

TEXTS = [
    "The cat sat on the mat. It was a sunny day, and the cat was happy.",
    "Héllo wörld — 日本 text.\n\nA second paragraph with  two spaces.",
    "Short one.",
]


def corpus_of(texts, splits=None) -> pl.DataFrame:
    splits = splits or ["train" if i % 2 == 0 else "eval" for i in range(len(texts))]
    return pl.DataFrame({"doc_id": [f"d{i}" for i in range(len(texts))], "split": splits, "text": list(texts)})


class CharTokenizer:
    """One token per character (id = code point + 10), with a BOS token (id 1) added by default."""

    bos_token_id = 1
    pad_token_id = 0

    def __call__(self, text, add_special_tokens=True, return_offsets_mapping=False):
        ids = [ord(c) + 10 for c in text]
        offsets = [(i, i + 1) for i in range(len(text))]
        if add_special_tokens:
            ids, offsets = [self.bos_token_id] + ids, [(0, 0)] + offsets
        return SimpleNamespace(input_ids=ids, offset_mapping=offsets)


@pytest.fixture(scope="module")
def smol_tok(smollm2_tokenizer_dir):
    return transformers.AutoTokenizer.from_pretrained(smollm2_tokenizer_dir)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, smollm2_tokenizer_dir):
    torch.set_num_threads(1)
    out = tiny_llama(tmp_path_factory.mktemp("activations") / "tiny", smollm2_tokenizer_dir, n_layers=3, seed=5)
    model, tokenizer, _ = load_model(out)
    return model, tokenizer


def test_bos_prefix():
    assert bos_prefix(CharTokenizer()) == [1]


def test_smollm2_adds_no_bos(smol_tok):
    assert bos_prefix(smol_tok) == []


def test_tokenize_corpus_texts_concatenate_to_the_document(smol_tok):
    corpus = corpus_of(TEXTS)
    tokens = tokenize_corpus(corpus, smol_tok, seq_len=256)
    assert tokens.schema == pl.Schema(TOKENS_SCHEMA)
    assert tokens["seq_id"].unique().sort().to_list() == [0, 1, 2]  # one sequence per document
    for seq_id, text in enumerate(TEXTS):
        seq = tokens.filter(pl.col("seq_id") == seq_id)
        assert "".join(seq["text"]) == text
        assert seq["position"].to_list() == list(range(seq.height))  # no BOS: positions start at 0
        assert seq["doc_id"].unique().to_list() == [f"d{seq_id}"]
        assert seq["token_id"].to_list() == smol_tok(text, add_special_tokens=False).input_ids
    assert tokens.filter(pl.col("doc_id") == "d1")["split"].unique().to_list() == ["eval"]
    assert usable_rows(tokens).tolist() == np.flatnonzero(tokens["position"].to_numpy() > 0).tolist()
    eval_rows = usable_rows(tokens, "eval")
    assert set(tokens[eval_rows.tolist()]["doc_id"]) == {"d1"} and 0 not in tokens[eval_rows.tolist()]["position"]


def test_tokenize_corpus_cuts_long_documents_into_sequences(smol_tok):
    text = TEXTS[0] + " " + TEXTS[1]
    n = len(smol_tok(text, add_special_tokens=False).input_ids)
    tokens = tokenize_corpus(corpus_of([text]), smol_tok, seq_len=8)
    lengths = tokens.group_by("seq_id", maintain_order=True).len()["len"].to_list()
    assert all(1 < length <= 8 for length in lengths)
    assert lengths[:-1] == [8] * (len(lengths) - 1)
    assert sum(lengths) in (n, n - 1)  # a one-token tail is dropped
    joined = "".join(tokens["text"])
    assert text.startswith(joined) and len(joined) >= len(text) - 10
    for _, seq in tokens.group_by("seq_id", maintain_order=True):
        assert seq["position"].to_list() == list(range(seq.height))
    inputs = sequences(tokens, [])
    assert [len(s) for s in inputs] == lengths and inputs[0] == tokens["token_id"].to_list()[:8]


def test_tokenize_corpus_with_a_bos_tokenizer():
    tokens = tokenize_corpus(corpus_of(["abcdefghi", "uvwxyz"]), CharTokenizer(), seq_len=5)
    # 4 content tokens per sequence after the BOS; "i" alone is dropped
    assert tokens.group_by("seq_id", maintain_order=True).agg("text")["text"].to_list() == [
        list("abcd"), list("efgh"), list("uvwx"), list("yz")]
    assert tokens["doc_id"].to_list() == ["d0"] * 8 + ["d1"] * 6
    assert tokens.filter(pl.col("seq_id") == 0)["position"].to_list() == [1, 2, 3, 4]
    assert tokens.filter(pl.col("seq_id") == 3)["position"].to_list() == [1, 2]
    assert len(usable_rows(tokens)) == tokens.height  # position 0 is the BOS, never a row
    assert sequences(tokens, [1])[3] == [1, ord("y") + 10, ord("z") + 10]
    with pytest.raises(ActivationError, match="seq_len"):
        tokenize_corpus(corpus_of(["abc"]), CharTokenizer(), seq_len=2)


def test_tokenize_corpus_max_tokens_cuts_after_a_whole_sequence():
    corpus = corpus_of(["abcdefghijklmnop", "qrstuvwxy"])
    tokens = tokenize_corpus(corpus, CharTokenizer(), seq_len=5, max_tokens=6)
    assert tokens.height == 8  # two sequences of 4: the second crosses max_tokens
    assert "".join(tokens["text"]) == "abcdefgh"
    assert tokenize_corpus(corpus, CharTokenizer(), seq_len=5, max_tokens=8).height == 8
    assert tokenize_corpus(corpus, CharTokenizer(), seq_len=5).height == 16 + 8  # "qrstuvwxy" loses "y"


def reference_hidden(model, ids, layer):
    with torch.no_grad():
        out = model(input_ids=torch.tensor([ids]), output_hidden_states=True)
    return out.hidden_states[layer + 1][0]


def test_cache_layer_equals_hidden_states_of_a_single_sequence(tiny):
    model, tokenizer = tiny
    tokens = tokenize_corpus(corpus_of(TEXTS[:1]), tokenizer, seq_len=64)
    cache = cache_layer(model, tokenizer, tokens, layer=1, progress=False)
    assert cache["hidden"].dtype == torch.float16 and cache["hidden"].shape == (tokens.height, 64)
    expected = reference_hidden(model, tokens["token_id"].to_list(), 1)
    torch.testing.assert_close(cache["hidden"].float(), expected, atol=1e-3, rtol=1e-3)
    assert not torch.allclose(cache["hidden"].float(), reference_hidden(model, tokens["token_id"].to_list(), 0),
                              atol=1e-3)
    assert cache["token_ids"].tolist() == tokens["token_id"].to_list()
    assert cache["positions"].tolist() == tokens["position"].to_list()
    assert cache["seq_ids"].tolist() == [0] * tokens.height


def test_cache_layer_padding_does_not_change_results(tiny):
    model, tokenizer = tiny
    tokens = tokenize_corpus(corpus_of(TEXTS), tokenizer, seq_len=64)
    lengths = tokens.group_by("seq_id", maintain_order=True).len()["len"].to_list()
    assert len(set(lengths)) == 3  # three different lengths in one batch
    cache = cache_layer(model, tokenizer, tokens, layer=0, batch_size=8, progress=False)
    for seq_id in range(3):
        rows = np.flatnonzero(tokens["seq_id"].to_numpy() == seq_id)
        expected = reference_hidden(model, tokens["token_id"].to_numpy()[rows].tolist(), 0)
        torch.testing.assert_close(cache["hidden"][torch.from_numpy(rows)].float(), expected, atol=1e-3, rtol=1e-3)


def test_layer_outputs_stops_after_the_deepest_layer(tiny):
    model, _ = tiny
    calls = []
    handle = model.model.layers[2].register_forward_hook(lambda *args: calls.append(1))
    try:
        out = layer_outputs(model, [[5, 6, 7], [8, 9]], [1, 0], progress=False)
    finally:
        handle.remove()
    assert calls == []
    assert sorted(out) == [0, 1] and [h.shape for h in out[1]] == [(3, 64), (2, 64)]
    torch.testing.assert_close(out[1][1], reference_hidden(model, [8, 9], 1), atol=1e-5, rtol=1e-5)
    with pytest.raises(ActivationError, match=r"layer\(s\) \[3\]"):
        layer_outputs(model, [[5, 6]], [3], progress=False)


def test_layer_outputs_input_layer_is_the_embedding_output(tiny):
    model, _ = tiny
    calls = []
    handle = model.model.layers[0].register_forward_hook(lambda *args: calls.append(1))
    try:
        out = layer_outputs(model, [[5, 6, 7], [8, 9]], [INPUT_LAYER], progress=False)
    finally:
        handle.remove()
    assert calls == []  # no block runs when only the input embedding is asked for
    with torch.no_grad():
        expected = model.get_input_embeddings()(torch.tensor([8, 9]))
    torch.testing.assert_close(out[INPUT_LAYER][1], expected)
    torch.testing.assert_close(out[INPUT_LAYER][1], reference_hidden(model, [8, 9], INPUT_LAYER))
    with pytest.raises(ActivationError, match=r"layer\(s\) \[-2\]"):
        layer_outputs(model, [[5, 6]], [-2], progress=False)


def test_save_and_load_cache(tiny, tmp_path):
    model, tokenizer = tiny
    tokens = tokenize_corpus(corpus_of(TEXTS[:2]), tokenizer, seq_len=64)
    cache = cache_layer(model, tokenizer, tokens, layer=0, progress=False)
    path = save_cache(cache, tmp_path / "cache" / "layer0.safetensors", layer=0)
    assert torch.equal(load_cache(path, tokens), cache["hidden"])
    assert torch.equal(load_cache(path), cache["hidden"])
    other = tokens.with_columns((pl.col("token_id") + 1).alias("token_id"))
    with pytest.raises(ActivationError, match="does not match the tokens table"):
        load_cache(path, other)
    with pytest.raises(ActivationError, match="does not match the tokens table"):
        load_cache(path, tokens.head(5))
