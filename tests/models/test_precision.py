"""compute.dtype: which precision auto picks, and how inference and training use it."""

from __future__ import annotations

import pytest
import torch

from introspect.models.precision import autocast, cpu_has_bf16_matmul, resolve_dtype


def test_auto_is_bfloat16_only_where_the_cpu_multiplies_it_natively(tmp_path, monkeypatch):
    amx = tmp_path / "amx"
    amx.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx512f avx512_bf16 amx_tile amx_bf16\n\nprocessor\t: 1\n")
    plain = tmp_path / "plain"
    plain.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f\n")
    assert cpu_has_bf16_matmul(str(amx)) and not cpu_has_bf16_matmul(str(plain))
    assert not cpu_has_bf16_matmul(str(tmp_path / "missing"))
    import introspect.models.precision as precision

    monkeypatch.setattr(precision, "cpu_has_bf16_matmul", lambda: True)
    assert resolve_dtype("auto", "cpu") == torch.bfloat16
    monkeypatch.setattr(precision, "cpu_has_bf16_matmul", lambda: False)
    assert resolve_dtype("auto", "cpu") == torch.float32
    assert resolve_dtype("float32", "cpu") == torch.float32 and resolve_dtype("bfloat16", "cpu") == torch.bfloat16
    with pytest.raises(ValueError, match="compute.dtype must be one of"):
        resolve_dtype("fp16", "cpu")


def test_autocast_runs_matmuls_in_bfloat16_over_float32_weights():
    layer = torch.nn.Linear(8, 4)
    with autocast(torch.bfloat16, "cpu"):
        out = layer(torch.randn(2, 8))
    assert out.dtype == torch.bfloat16 and layer.weight.dtype == torch.float32
    with autocast(torch.float32, "cpu"):
        assert layer(torch.randn(2, 8)).dtype == torch.float32


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory, smollm2_tokenizer_dir):
    from conftest import tiny_llama

    return tiny_llama(tmp_path_factory.mktemp("precision") / "tiny", smollm2_tokenizer_dir, n_layers=2)


def test_a_stage_model_loads_in_the_compute_dtype_and_says_so(tiny_model_dir, caplog):
    from introspect.models.loading import load_stage_model

    with caplog.at_level("INFO"):
        model, _, _, device = load_stage_model(tiny_model_dir, "cpu", "bfloat16")
    assert device == "cpu" and next(model.parameters()).dtype == torch.bfloat16
    assert "in bfloat16 (compute.dtype bfloat16)" in caplog.text
    model, _, _, _ = load_stage_model(tiny_model_dir, "cpu", "float32")
    assert next(model.parameters()).dtype == torch.float32
