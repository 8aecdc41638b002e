"""The CUDA code paths of the ground-truth stages, checked on the CPU: device moves and dtypes.

There is no GPU in CI, and a CPU run cannot crash the way a CUDA run does (``.numpy()`` of a CUDA tensor
raises; on the CPU every tensor is already there). So these tests run the stages on a *fake accelerator*:
the weights of the model (or SAE) are :class:`OnAccelerator` tensors, a tensor subclass that every result
computed from them inherits, whose ``.numpy()`` and ``.tolist()`` raise and whose ``.cpu()`` returns a plain
tensor. A stage that hands a model output to numpy or to Python without moving it to the CPU first fails
here exactly where it would crash (``.numpy()``) or silently sync (``.tolist()``) on a GPU. The sweep of
before this change fails these tests: at ``.tolist()`` of the patched arg-maxes and, once that is fixed, at
``iv.vector.float().numpy()`` (the vectors were slices of hidden states kept on the device).

The bfloat16 tests cover the other half of the paper's GPU setting: targets in their compute dtype, while
every output table stays float32.
"""

from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import polars as pl
import pytest
import torch
from conftest import REPO, tiny_llama

from introspect.groundtruth.exemplars import ExemplarSettings, sae_exemplars
from introspect.groundtruth.hints import HintSettings, run_hints
from introspect.groundtruth.patching import (
    Patcher,
    SweepSettings,
    build_prompt,
    layer_chunks,
    patch_sweep,
    sweep_frame,
)
from introspect.groundtruth.sae import SAESettings, fvu, sae_stats, train_topk
from introspect.models.loading import load_model
from introspect.sources.questions import builtin_questions, questions_frame

FORMAT = "{statement}\nRespond with one of {options} and nothing else."


class OnAccelerator(torch.Tensor):
    """A CPU tensor that stands for one on an accelerator (see the module docstring).

    Results of any torch operation with such a tensor among its inputs are ``OnAccelerator`` too (torch's
    subclass propagation); ``.cpu()`` is the only way back to a plain tensor.
    """

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if func in (torch.Tensor.numpy, torch.Tensor.tolist):
            raise AssertionError(f".{func.__name__}() of a tensor that is still on the accelerator: "
                                 "move it to the CPU first (.cpu())")
        if func is torch.Tensor.cpu:
            with torch._C.DisableTorchFunctionSubclass():
                return func(*args, **(kwargs or {})).as_subclass(torch.Tensor)
        return super().__torch_function__(func, types, args, kwargs)

    def __deepcopy__(self, memo):  # a KV cache is deep-copied per forward pass
        with torch._C.DisableTorchFunctionSubclass():
            copied = torch.Tensor.clone(self).as_subclass(type(self))
        memo[id(self)] = copied
        return copied


def on_fake_accelerator(module: torch.nn.Module) -> torch.nn.Module:
    """Make every parameter and buffer of `module` an :class:`OnAccelerator` tensor (in place)."""
    for sub in module.modules():
        for name, param in list(sub._parameters.items()):
            if param is not None:
                sub._parameters[name] = torch.nn.Parameter(param.detach().as_subclass(OnAccelerator),
                                                           requires_grad=param.requires_grad)
        for name, buffer in list(sub._buffers.items()):
            if buffer is not None:
                sub._buffers[name] = buffer.as_subclass(OnAccelerator)
    return module


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, smollm2_tokenizer_dir):
    return tiny_llama(tmp_path_factory.mktemp("devices") / "tiny", smollm2_tokenizer_dir, n_layers=4, seed=3)


def fact(subject, obj):
    return SimpleNamespace(subject=subject, template="{} is the capital of", object=obj, relation_id="P36")


PAIRS = [SimpleNamespace(original=fact("Buenos Aires", "Argentina"), counterfactual=fact("Rome", "Italy"),
                         options=("Argentina", "Italy", "Spain", "Egypt", "France")),
         SimpleNamespace(original=fact("Paris", "France"), counterfactual=fact("Madrid", "Spain"),
                         options=("France", "Spain", "Italy", "Egypt", "Peru"))]


def sweep(model, tok, batch_size=7):
    settings = SweepSettings(FORMAT, chat=True, chunks=tuple(layer_chunks(4, 2)), batch_size=batch_size,
                             require_correct=False)
    return patch_sweep(PAIRS, model, tok, settings, progress=False)


def test_the_fake_accelerator_catches_a_missing_move(tiny_dir):
    model, tok, _ = load_model(tiny_dir)
    on_fake_accelerator(model)
    with torch.no_grad():
        logits = model(torch.tensor([tok("Rome is the capital of").input_ids])).logits
    assert isinstance(logits, OnAccelerator)
    with pytest.raises(AssertionError, match=r"\.numpy\(\) of a tensor that is still on the accelerator"):
        logits[0, -1].float().numpy()
    with pytest.raises(AssertionError, match=r"\.tolist\(\)"):
        logits.argmax(-1).tolist()
    assert type(logits.cpu()) is torch.Tensor and logits.cpu().argmax(-1).tolist()


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_sweep_on_the_accelerator_moves_everything_to_the_cpu(tiny_dir, dtype):
    model, tok, _ = load_model(tiny_dir, dtype=dtype)
    plain, plain_stats = sweep(model, tok)
    columns, stats = sweep(on_fake_accelerator(model), tok)
    assert stats == plain_stats and columns["patched_continuation"] == plain["patched_continuation"]
    assert all(type(v) is np.ndarray and v.dtype == np.float32 for v in columns["vector"])
    np.testing.assert_array_equal(np.stack(columns["vector"]), np.stack(plain["vector"]))
    assert sweep_frame(columns)["vector"].dtype == pl.Array(pl.Float32, 64)


def layer_outputs(model, ids):
    """Reference: every decoder layer's output for one unpadded sequence, through forward hooks."""
    seen = {}
    hooks = [layer.register_forward_hook(lambda m, a, out, i=i: seen.__setitem__(i, out[0] if isinstance(out, tuple)
                                                                                    else out))
             for i, layer in enumerate(model.model.layers)]
    try:
        with torch.no_grad():
            model(torch.tensor([ids]))
    finally:
        for hook in hooks:
            hook.remove()
    return torch.stack([seen[i][0] for i in range(len(seen))])  # (n_layers, len, d)


def test_saved_states_are_on_the_cpu_in_the_compute_dtype(tiny_dir):
    model, tok, _ = load_model(tiny_dir, dtype="bfloat16")
    ids = [tok("Rome is the capital of Italy").input_ids, tok("Paris is").input_ids]
    patcher = Patcher(on_fake_accelerator(model), tok)
    states = patcher.hidden_states(ids, starts=[2, 0])
    assert [s.shape for s in states] == [(4, len(ids[0]) - 2, 64), (4, len(ids[1]), 64)]
    assert all(type(s) is torch.Tensor and s.dtype == torch.bfloat16 and s.device.type == "cpu" for s in states)
    plain = load_model(tiny_dir, dtype="bfloat16")[0]
    for seq, start, got in zip(ids, (2, 0), states):
        expected = layer_outputs(plain, seq)[:, start:]
        assert expected.dtype == torch.bfloat16
        assert torch.allclose(got.float(), expected.float(), atol=0.05, rtol=0.02)  # batch of 2, padded
    assert torch.equal(patcher.hidden_states(ids[:1])[0], layer_outputs(plain, ids[0]))  # one sequence: exact


def test_bfloat16_sweep_vectors_are_float32_means_of_the_bfloat16_states(tiny_dir):
    model, tok, _ = load_model(tiny_dir, dtype="bfloat16")
    pair = PAIRS[:1]
    settings = SweepSettings(FORMAT, chat=True, chunks=((0, 1), (2, 3)), batch_size=5, require_correct=False)
    columns, _ = patch_sweep(pair, model, tok, settings, progress=False)
    df = sweep_frame(columns)
    cf = build_prompt("Rome", "{} is the capital of", pair[0].options + ("unknown",), FORMAT, tok, chat=True)
    states = layer_outputs(model, tok(cf.text, add_special_tokens=False).input_ids)  # bf16, one sequence
    for row in df.iter_rows(named=True):
        expected = states[row["layers"], row["counterfact_pos"]].float().mean(0).numpy()
        np.testing.assert_array_equal(np.asarray(row["vector"], dtype=np.float32), expected)
    assert set(df["has_changed"].to_list()) <= {True, False} and df["patched_continuation"].dtype == pl.String


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_hint_runs_on_the_accelerator(tiny_dir, dtype):
    model, tok, _ = load_model(tiny_dir, dtype=dtype)
    questions = questions_frame(builtin_questions(12, seed=0))
    settings = HintSettings(batch_size=5, seed=1)
    plain = run_hints(questions, model, tok, settings, progress=False)
    runs = run_hints(questions, on_fake_accelerator(model), tok, settings, progress=False)
    assert runs.equals(plain) and set(runs["answer_plain"]) <= set("ABCD")


@pytest.fixture(scope="module")
def small_sae():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(800, 16, generator=g) * 2 + 0.5
    sae, _ = train_topk(x, SAESettings(expansion=2, k=3, epochs=1, batch_size=64, seed=0), progress=False)
    return sae, x[:300].to(torch.float16)


def test_sae_evaluation_encodes_where_asked_and_returns_python_numbers(small_sae):
    sae, x16 = small_sae
    expected = sae_stats(sae, x16.float(), batch_size=64)
    fake = on_fake_accelerator(copy.deepcopy(sae))
    got = sae_stats(fake, x16, batch_size=64, device="cpu")  # float16 activations, encoded "on the device"
    assert got == expected and all(isinstance(v, (int, float)) for v in got.values())
    assert fvu(fake, x16, batch_size=50) == pytest.approx(expected["fvu"], rel=1e-6)


def test_sae_exemplars_on_the_accelerator_are_float32_numpy(small_sae):
    sae, x16 = small_sae
    n = x16.shape[0]
    tokens = pl.DataFrame({"seq_id": np.arange(n) // 30, "position": np.arange(n) % 30, "split": ["eval"] * n,
                           "text": [f"t{i}" for i in range(n)]})
    settings = ExemplarSettings(width=5, n_top=3, n_random=2, max_values=5 * 32 * 7)  # several passes
    plain, plain_stats = sae_exemplars(x16.float(), tokens, sae, 3, settings, seed=0, progress=False)
    frame, stats = sae_exemplars(x16, tokens, on_fake_accelerator(copy.deepcopy(sae)), 3, settings, seed=0,
                                 progress=False, device="cpu")
    assert stats == plain_stats and frame.equals(plain)
    assert frame.schema["activations"] == pl.List(pl.List(pl.Float32))


def test_sae_on_moves_a_copy_and_leaves_the_original(small_sae):
    sae, _ = small_sae
    assert sae.on("cpu") is sae and sae.on(torch.device("cpu")) is sae
    moved = sae.on("meta")  # a device without a GPU: the move itself is what is checked
    assert moved is not sae and moved.device.type == "meta" and sae.device.type == "cpu"
    assert (moved.n_features, moved.d_model, moved.k, moved.input_scale) == (sae.n_features, sae.d_model, sae.k,
                                                                             sae.input_scale)
    assert moved.decoder.dtype == torch.float32


@pytest.mark.parametrize("script, stage", [
    ("patching_sweep", "patching"), ("hints_run", "hints"), ("features_sae", "features"),
    ("features_exemplars", "features"), ("features_activations", "features"), ("features_eval_dact", "features"),
    ("features_projection", "features"), ("features_similarity", "features"), ("features_selfie", "train")])
def test_scripts_name_their_rule_and_gpu_stage_in_device_errors(script, stage):
    """Every script that puts a model or an SAE on compute.device resolves it with its rule and its
    compute.gpus key (so a device error names both), directly or through load_stage_model."""
    text = (REPO / "workflow_scripts" / f"{script}.py").read_text()
    calls = ("resolve_device(params.device, rule=snakemake.rule",
             "load_stage_model(")
    assert any(call in text for call in calls) and f'gpus="{stage}")' in text
    if "load_stage_model(" not in text:
        assert "device=device" in text  # the resolved device is what the library gets