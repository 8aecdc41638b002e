"""`introspect describe`: a trained feature explainer applied to a vector file or to a text's activation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import tiny_llama
from safetensors.torch import save_file

from introspect.cli import main, read_vectors, text_activation


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, smollm2_tokenizer_dir):
    from introspect.explainers.model import ExplainerSettings, build_explainer

    root = tmp_path_factory.mktemp("cli")
    target = tiny_llama(root / "target", smollm2_tokenizer_dir, n_layers=3)
    explainer = build_explainer(target, ExplainerSettings(target_hidden=64, layers=(1, 2), chat=True))
    explainer.save(root / "explainer", metadata={"task": "features", "target_model": str(target)})
    return root / "explainer", target


def test_read_vectors_formats_and_errors(tmp_path):
    v = torch.arange(12, dtype=torch.float32).reshape(2, 6)
    np.save(tmp_path / "v.npy", v.numpy())
    torch.save(v[0], tmp_path / "v.pt")
    save_file({"a": v, "b": v[1].clone()}, tmp_path / "v.safetensors")
    assert torch.equal(read_vectors(tmp_path / "v.npy"), v)
    assert torch.equal(read_vectors(tmp_path / "v.pt"), v[:1])
    assert read_vectors(tmp_path / "v.safetensors").shape == (3, 6)
    assert torch.equal(read_vectors(tmp_path / "v.safetensors", key="b"), v[1:])
    with pytest.raises(KeyError, match="no tensor 'c'"):
        read_vectors(tmp_path / "v.safetensors", key="c")
    with pytest.raises(ValueError, match="unknown vector file type"):
        (tmp_path / "v.txt").write_text("1 2 3")
        read_vectors(tmp_path / "v.txt")
    with pytest.raises(FileNotFoundError):
        read_vectors(tmp_path / "missing.npy")


def test_text_activation_is_the_residual_after_the_block(checkpoint):
    from introspect.models.loading import load_model

    _, target = checkpoint
    vector, token = text_activation(target, "The Eiffel Tower is in Paris", layer=1, token=-1)
    model, tokenizer, _ = load_model(target)
    ids = tokenizer("The Eiffel Tower is in Paris").input_ids  # with the BOS the tokenizer adds, if any
    with torch.no_grad():
        hidden = model(torch.tensor([ids]), output_hidden_states=True).hidden_states
    assert torch.allclose(vector, hidden[2][0, -1], atol=1e-5)  # hidden_states[0] is the embedding output
    assert token.strip() == "Paris"
    with pytest.raises(IndexError, match="outside the text's"):
        text_activation(target, "Paris", layer=1, token=5)


def test_describe_from_a_vector_file_and_from_text(checkpoint, tmp_path, capsys):
    from introspect.cli import describe_vectors

    ckpt, _ = checkpoint
    vectors = torch.randn(3, 64, generator=torch.Generator().manual_seed(0))
    np.save(tmp_path / "v.npy", vectors.numpy())
    assert main(["describe", str(ckpt), "--layer", "1", "--vector", str(tmp_path / "v.npy"), "--json",
                 "--max-new-tokens", "4"]) == 0
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [p["index"] for p in printed] == [0, 1, 2]
    assert [p["description"] for p in printed] == describe_vectors(ckpt, vectors, 1, max_new_tokens=4)
    assert main(["describe", str(ckpt), "--layer", "2", "--text", "Paris is big", "--token", "0",
                 "--max-new-tokens", "4"]) == 0
    assert "token 0 ('Paris') of the text @ layer 2:" in capsys.readouterr().out


def test_describe_errors_name_the_problem(checkpoint, tmp_path, capsys):
    ckpt, _ = checkpoint
    np.save(tmp_path / "small.npy", np.zeros((1, 8), dtype=np.float32))
    assert main(["describe", str(ckpt), "--layer", "1", "--vector", str(tmp_path / "small.npy")]) == 2
    assert "explains 64-dimensional vectors; got 8" in capsys.readouterr().err
    assert main(["describe", str(tmp_path), "--layer", "1", "--vector", str(tmp_path / "small.npy")]) == 2
    assert "not an explainer checkpoint" in capsys.readouterr().err
