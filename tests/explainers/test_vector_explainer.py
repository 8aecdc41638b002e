"""The continuous-token explainer: insertion, projections, loss masking, LoRA, training, checkpoints."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import tiny_llama

from introspect.explainers.model import (
    IGNORE,
    VECTOR_TOKENS,
    ExplainerSettings,
    build_explainer,
    collate,
    encode,
    explanation_loss,
    load_explainer,
)
from introspect.explainers.training import ExplainerData, TrainSettings, train_explainer

PROMPT = "At layer 3, {vector} encodes"


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, smollm2_tokenizer_dir):
    return tiny_llama(tmp_path_factory.mktemp("explainer") / "tiny", smollm2_tokenizer_dir, n_layers=2)


def test_encode_marks_only_the_explanation_and_finds_the_vector(tiny_dir):
    ex = build_explainer(tiny_dir, ExplainerSettings(target_hidden=64))
    enc = encode(ex.tokenizer, PROMPT, "city names")
    tok = ex.tokenizer
    vec_ids = tok.convert_tokens_to_ids(list(VECTOR_TOKENS))
    assert enc.input_ids[enc.vector_pos] == vec_ids[1]
    assert enc.input_ids[enc.vector_pos - 1] == vec_ids[0] and enc.input_ids[enc.vector_pos + 1] == vec_ids[2]
    learned = [t for t, label in zip(enc.input_ids, enc.labels) if label != IGNORE]
    assert tok.decode(learned) == " city names" + tok.eos_token
    assert all(label == IGNORE for label in enc.labels[: len(enc.labels) - len(learned)])
    assert encode(tok, "Question: 2+2?", None).vector_pos == -1


def test_placeholder_embedding_is_the_projected_vector(tiny_dir):
    torch.manual_seed(0)
    ex = build_explainer(tiny_dir, ExplainerSettings(target_hidden=48, layers=(1, 3), projection="random"))
    items = [encode(ex.tokenizer, PROMPT, "a"), encode(ex.tokenizer, "{vector} at layer 1 is", "b"),
             encode(ex.tokenizer, "no vector here", "c")]
    vectors = torch.randn(3, 48)
    batch = collate(items, ex.tokenizer.pad_token_id, vectors, [3, 1, 1])
    seen = {}

    def grab(module, args, kwargs):
        seen["h"] = kwargs.get("hidden_states", args[0] if args else None)

    hook = ex.lm.model.layers[0].register_forward_pre_hook(grab, with_kwargs=True)
    ex(batch)
    hook.remove()
    embeds = ex.lm.get_input_embeddings()(batch.input_ids)
    h = seen["h"]
    with torch.no_grad():
        expected0 = ex.projections["3"](vectors[0])
        expected1 = ex.projections["1"](vectors[1])
    assert torch.allclose(h[0, items[0].vector_pos], expected0)
    assert torch.allclose(h[1, items[1].vector_pos], expected1)
    # every other position is the ordinary token embedding
    mask = torch.ones_like(batch.input_ids, dtype=torch.bool)
    mask[0, items[0].vector_pos] = mask[1, items[1].vector_pos] = False
    assert torch.equal(h[mask], embeds[mask])


def test_identity_when_sizes_match_and_error_when_they_do_not(tiny_dir):
    ex = build_explainer(tiny_dir, ExplainerSettings(target_hidden=64))
    assert len(ex.projections) == 0
    v = torch.randn(2, 64)
    assert torch.equal(ex.project(v, torch.tensor([0, 5])), v)
    with pytest.raises(ValueError, match="projection: random or pretrained"):
        build_explainer(tiny_dir, ExplainerSettings(target_hidden=576))


def test_projection_shapes_576_to_640(tmp_path, smollm2_tokenizer_dir):
    tiny_llama(tmp_path / "wide", smollm2_tokenizer_dir, n_layers=1, hidden_size=640)
    ex = build_explainer(tmp_path / "wide", ExplainerSettings(target_hidden=576, layers=(0, 15, 29), projection="random"))
    assert {k: tuple(p.weight.shape) for k, p in ex.projections.items()} == {
        "0": (640, 576), "15": (640, 576), "29": (640, 576)}
    assert ex.project(torch.randn(4, 576), torch.tensor([0, 15, 29, 15])).shape == (4, 640)


def test_loss_ignores_everything_but_the_explanation():
    torch.manual_seed(0)
    logits = torch.randn(2, 6, 11)
    labels = torch.tensor([[IGNORE, IGNORE, IGNORE, 4, 5, IGNORE], [IGNORE, IGNORE, 1, 2, 3, 7]])
    loss = explanation_loss(logits, labels)
    lp = logits.log_softmax(-1)
    ex0 = -(lp[0, 2, 4] + lp[0, 3, 5]) / 2
    ex1 = -(lp[1, 1, 1] + lp[1, 2, 2] + lp[1, 3, 3] + lp[1, 4, 7]) / 4
    assert torch.allclose(loss, (ex0 + ex1) / 2)  # each example weighs the same, whatever its length
    changed = logits.clone()
    changed[:, 0] += 100.0  # logits at position 0 predict a prompt token: no effect
    changed[0, 4:] -= 50.0  # nor do positions after the last label
    assert torch.allclose(explanation_loss(changed, labels), loss)
    with pytest.raises(ValueError, match="no example"):
        explanation_loss(logits, torch.full_like(labels, IGNORE))


def toy_data(ex, n=8, dim=64):
    g = torch.Generator().manual_seed(1)
    prompts = [PROMPT, "What does {vector} mean at layer 3?"]
    labels = ["city names", "negation words"]
    items = [encode(ex.tokenizer, prompts[i % 2], labels[i % 2]) for i in range(n)]
    return ExplainerData(items, torch.randn(n, dim, generator=g), [3] * n)


def test_loss_from_the_learned_positions_only_equals_the_full_loss(tiny_dir):
    ex = build_explainer(tiny_dir, ExplainerSettings(target_hidden=64))
    data = toy_data(ex)
    batch = data.batch([0, 1, 2], ex.tokenizer.pad_token_id)
    with torch.no_grad():
        full = ex.lm(inputs_embeds=ex.embed(batch), attention_mask=batch.attention_mask).logits
        assert torch.allclose(ex(batch), explanation_loss(full, batch.labels), atol=1e-6)


def test_full_training_lowers_the_loss_and_the_checkpoint_reloads(tiny_dir, tmp_path):
    ex = build_explainer(tiny_dir, ExplainerSettings(target_hidden=64))
    data = toy_data(ex)
    history = train_explainer(ex, data, TrainSettings(lr=1e-2, epochs=15, batch_size=4))
    assert history[-1] < 0.5 * history[0]
    ex.save(tmp_path / "ckpt", metadata={"task": "test"})
    again = load_explainer(tmp_path / "ckpt")
    batch = data.batch([0, 1, 2], ex.tokenizer.pad_token_id)
    with torch.no_grad():
        assert torch.allclose(again(batch), ex(batch), atol=1e-5)
    assert json.loads((tmp_path / "ckpt/explainer.json").read_text())["metadata"] == {"task": "test"}


def test_full_tuning_can_freeze_the_embeddings(tiny_dir):
    ex = build_explainer(tiny_dir, ExplainerSettings(target_hidden=64, train_embeddings=False))
    frozen = {n for n, p in ex.named_parameters() if not p.requires_grad}
    assert frozen and all("embed" in n or "lm_head" in n for n in frozen)
    assert ex.lm.model.layers[0].mlp.up_proj.weight.requires_grad


def test_lora_trains_adapters_and_pi_l_through_a_low_rank_update(tiny_dir, tmp_path):
    # paper footnote 6: under LoRA the projection layers are trained via low-rank updates too
    ex = build_explainer(tiny_dir, ExplainerSettings(target_hidden=48, layers=(3,), projection="random",
                                                     tuning="lora", lora_r=4))
    trainable = {n for n, p in ex.named_parameters() if p.requires_grad}
    assert {"projections.3.lora_A", "projections.3.lora_B"} <= trainable
    assert "projections.3.weight" not in trainable
    assert all("lora_" in n for n in trainable)
    frozen_before = ex.lm.get_input_embeddings().weight.detach().clone()
    proj_before = ex.projections["3"].merged_weight().detach().clone()
    data = toy_data(ex, dim=48)
    history = train_explainer(ex, data, TrainSettings(lr=1e-2, epochs=4, batch_size=4))
    assert history[-1] < history[0]
    assert torch.equal(ex.lm.get_input_embeddings().weight, frozen_before)
    update = ex.projections["3"].merged_weight().detach() - proj_before
    assert update.abs().max() > 0 and torch.linalg.matrix_rank(update.double(), atol=1e-7) <= 4
    ex.save(tmp_path / "lora")
    again = load_explainer(tmp_path / "lora")  # the saved Pi_l is the merged matrix
    batch = data.batch([0, 1], ex.tokenizer.pad_token_id)
    with torch.no_grad():
        assert torch.allclose(again(batch), ex(batch), atol=1e-5)


def test_lora_with_fully_trained_projections_on_request(tiny_dir):
    ex = build_explainer(tiny_dir, ExplainerSettings(target_hidden=48, layers=(3,), projection="random",
                                                     tuning="lora", lora_r=4, projection_tuning="full"))
    trainable = {n for n, p in ex.named_parameters() if p.requires_grad}
    assert "projections.3.weight" in trainable and "projections.3.lora_A" not in trainable


def test_batched_generation_matches_one_at_a_time(tiny_dir):
    ex = build_explainer(tiny_dir, ExplainerSettings(target_hidden=64))
    prompts = [PROMPT, "Generate a description of this feature at layer 3: {vector}.", "no vector"]
    items = [encode(ex.tokenizer, p, None) for p in prompts]
    vectors = torch.randn(3, 64)
    pad = ex.tokenizer.pad_token_id
    together = ex.generate(collate(items, pad, vectors, [3, 3, 3], left_pad=True), max_new_tokens=5)
    alone = [ex.generate(collate([it], pad, vectors[i:i + 1], [3], left_pad=True), max_new_tokens=5)[0]
             for i, it in enumerate(items)]
    assert together == alone


@pytest.mark.slow
def test_deepspeed_zero1_steps_on_cpu_and_checkpoint_loads(tiny_dir, tmp_path):
    from conftest import REPO

    ex = build_explainer(tiny_dir, ExplainerSettings(target_hidden=64))
    data = toy_data(ex)
    history = train_explainer(ex, data, TrainSettings(lr=1e-2, epochs=8, batch_size=4, engine="deepspeed",
                                                      deepspeed_config=str(REPO / "configs/deepspeed/zero1.json")))
    assert history[-1] < 0.5 * history[0]
    ex.save(tmp_path / "ds")
    again = load_explainer(tmp_path / "ds")
    batch = data.batch([0, 1], ex.tokenizer.pad_token_id)
    with torch.no_grad():
        assert torch.allclose(again(batch), ex(batch), atol=1e-5)


def test_vector_norm_rescales_the_placeholder_embedding(tiny_dir):
    from introspect.explainers.model import ExplainerSettings, build_explainer, collate, encode

    explainer = build_explainer(tiny_dir, ExplainerSettings(target_hidden=64, layers=(1,), vector_norm="embedding"))
    rows = explainer.lm.get_input_embeddings().weight.detach()  # a Llama embedding does not scale its rows
    assert explainer.settings.vector_norm == pytest.approx(float(rows[:-3].norm(dim=-1).mean()), rel=0.05)
    item = encode(explainer.tokenizer, "At layer 1, {vector} encodes", None)
    v = torch.randn(2, 64, generator=torch.Generator().manual_seed(1))
    embeds = explainer.embed(collate([item, item], explainer.tokenizer.pad_token_id, v, [1, 1]))
    placed = embeds[:, item.vector_pos]
    assert torch.allclose(placed, v / v.norm(dim=-1, keepdim=True) * explainer.settings.vector_norm, atol=1e-5)
    with pytest.raises(ValueError, match="vector_norm must be"):
        ExplainerSettings(target_hidden=64, vector_norm="tokens")


def test_embedding_norm_is_what_the_module_outputs_for_gemma(tmp_path, gemma3_tokenizer_dir):
    from introspect.explainers.model import mean_embedding_norm
    from introspect.models.loading import load_model
    from introspect.models.materialise import materialise_model
    from introspect.models.registry import ModelSpec

    spec = ModelSpec(name="g", source="random", architecture="gemma3_text", tokenizer="gemma3-270m", n_layers=1,
                     hidden_size=64, seed=0)
    materialise_model(spec, gemma3_tokenizer_dir, tmp_path / "g")
    lm, _, _ = load_model(tmp_path / "g")
    raw = float(lm.get_input_embeddings().weight.norm(dim=-1).mean())
    assert mean_embedding_norm(lm) == pytest.approx(raw * 64 ** 0.5, rel=0.05)  # Gemma scales by sqrt(hidden)
