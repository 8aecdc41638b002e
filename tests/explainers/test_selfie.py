"""SelfIE: the untrained model reads v over its input embeddings (appendix F.1)."""

from __future__ import annotations

import polars as pl
import pytest


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory, smollm2_tokenizer_dir):
    from conftest import tiny_llama

    from introspect.models.loading import load_model

    path = tiny_llama(tmp_path_factory.mktemp("selfie") / "tiny", smollm2_tokenizer_dir, n_layers=2)
    lm, tokenizer, _ = load_model(path)
    return lm, tokenizer


@pytest.mark.parametrize("chat", [False, True])
def test_selfie_prompt_is_appendix_f1_with_two_placeholders(tiny_lm, chat):
    from introspect.explainers.model import VECTOR_TOKENS
    from introspect.explainers.selfie import selfie_prompt

    _, tokenizer = tiny_lm
    ids, positions = selfie_prompt(tokenizer, chat)
    text = tokenizer.decode(ids)
    slot = VECTOR_TOKENS[1]
    if chat:
        assert f"Briefly define the word '{slot}'." in text
        assert text.rstrip().endswith(f"assistant\nThe meaning of the word '{slot}' is")
    else:
        assert text.endswith(f"What is the meaning of the word '{slot}'? The meaning of the word '{slot}' is")
    assert len(positions) == 2 and all(ids[p] == tokenizer.convert_tokens_to_ids(slot) for p in positions)


def test_selfie_writes_unit_norm_v_times_scale_at_every_placeholder(tiny_lm):
    import torch

    from introspect.explainers.model import grow_embeddings
    from introspect.explainers.selfie import selfie_embeddings, selfie_prompt

    lm, tokenizer = tiny_lm
    ids, positions = selfie_prompt(tokenizer, chat=False)
    grow_embeddings(lm, len(tokenizer))
    vectors = torch.tensor([[3.0] + [0.0] * 63, [0.0, 4.0] + [0.0] * 62])
    embeds = selfie_embeddings(lm, ids, positions, vectors, scale=10.0)
    plain = lm.get_input_embeddings()(torch.tensor([ids]))[0]
    for row, v in enumerate(vectors):
        for pos in positions:
            assert torch.allclose(embeds[row, pos], 10.0 * v / v.norm())
        others = [i for i in range(len(ids)) if i not in positions]
        assert torch.equal(embeds[row, others], plain[others])


def test_selfie_describes_every_vector_at_every_scale(tiny_lm):
    import torch

    from introspect.explainers.selfie import selfie_describe, selfie_frame

    lm, tokenizer = tiny_lm
    vectors = torch.randn(5, 64, generator=torch.Generator().manual_seed(0))
    described = selfie_describe(lm, tokenizer, vectors, chat=False, scales=(1, 50), max_new_tokens=3, batch_size=2)
    assert list(described) == [1.0, 50.0] and all(len(v) == 5 for v in described.values())
    again = selfie_describe(lm, tokenizer, vectors[3:4], chat=False, scales=(50,), max_new_tokens=3)
    assert again[50.0] == [described[50.0][3]]  # batching does not change a description
    items = pl.DataFrame({"item_id": [f"i{k}" for k in range(5)]})
    frame_ = selfie_frame(items, described)
    assert frame_.height == 10 and frame_["candidate"].unique(maintain_order=True).to_list() == ["1v", "50v"]
    with pytest.raises(ValueError, match="hidden size 64"):
        selfie_describe(lm, tokenizer, torch.zeros(2, 32), chat=False)


def test_selfie_method_names_its_interpreting_model():
    from introspect.names import is_selfie, selfie_interpreter, selfie_method

    assert selfie_method() == "selfie" and selfie_method("llama-3.1-8b-instruct") == "selfie-llama-3.1-8b-instruct"
    assert is_selfie("selfie") and is_selfie("selfie-llama-3.1-8b-instruct")
    assert not any(is_selfie(m) for m in ("selfie-", "nn_all", "gold", "llama-3.1-8b", "selfies"))
    assert selfie_interpreter("selfie", "llama-3.1-8b") == "llama-3.1-8b"  # the target itself, as before
    assert selfie_interpreter("selfie-llama-3.1-8b-instruct", "llama-3.1-8b") == "llama-3.1-8b-instruct"
    assert selfie_interpreter(selfie_method("m.v2-it"), "t") == "m.v2-it"
    with pytest.raises(ValueError, match="'nn_all' is not a SelfIE method"):
        selfie_interpreter("nn_all", "llama-3.1-8b")


def test_selfie_interpreter_must_be_a_registry_model_of_the_targets_hidden_size():
    from introspect.config import model_specs
    from introspect.names import selfie_interpreter

    models = model_specs({"models": {
        "base": {"source": "random", "architecture": "llama", "tokenizer": "x", "n_layers": 2, "hidden_size": 64},
        "base-it": {"source": "random", "architecture": "llama", "tokenizer": "x", "n_layers": 2, "hidden_size": 64,
                    "instruct": True},
        "other": {"source": "random", "architecture": "llama", "tokenizer": "x", "n_layers": 2, "hidden_size": 96},
    }})
    assert selfie_interpreter("selfie-base-it", "base", models) == "base-it" and models["base-it"].instruct
    assert selfie_interpreter("selfie", "base", models) == "base"
    with pytest.raises(ValueError, match=r"'other' has hidden size 96, but it must read 'base''s vectors of size 64"):
        selfie_interpreter("selfie-other", "base", models)
    with pytest.raises(ValueError, match=r"'nope' is not in the model registry .*one of base, base-it, other"):
        selfie_interpreter("selfie-nope", "base", models)
