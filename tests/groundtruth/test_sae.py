"""Sparse autoencoders: TopK training on synthetic sparse data, encode/decode, files, JumpReLU, errors."""

from __future__ import annotations

import json
import math

import numpy as np
import polars as pl
import pytest
import torch
from safetensors.torch import save_file

from introspect.groundtruth.sae import (
    SAE,
    SAEError,
    SAESettings,
    features_frame,
    from_download,
    fvu,
    input_scale,
    sae_for_layer,
    sae_stats,
    train_topk,
)

D, N_DIRS = 32, 64


def sparse_data(n: int, seed: int, dirs: torch.Tensor) -> torch.Tensor:
    """Each sample: 3 of the 64 unit directions with coefficients in [0.5, 1.5), plus an offset."""
    g = torch.Generator().manual_seed(seed)
    index = torch.stack([torch.randperm(N_DIRS, generator=g)[:3] for _ in range(n)])
    coef = torch.rand(n, 3, generator=g) + 0.5
    return (coef[..., None] * dirs[index]).sum(1) * 3.0 + 0.25


@pytest.fixture(scope="module")
def dirs():
    g = torch.Generator().manual_seed(123)
    return torch.nn.functional.normalize(torch.randn(N_DIRS, D, generator=g), dim=1)


@pytest.fixture(scope="module")
def trained(dirs):
    torch.set_num_threads(1)
    x = sparse_data(4000, 0, dirs)
    settings = SAESettings(expansion=4, k=4, epochs=6, batch_size=64, lr=5e-3, seed=0)
    sae, history = train_topk(x, settings, progress=False)
    return sae, history, x


def test_input_scale_makes_mean_squared_norm_the_dimension():
    x = torch.randn(500, 16) * 7.0
    scale = input_scale(x)
    assert (x * scale).pow(2).sum(-1).mean().item() == pytest.approx(16, rel=1e-4)


def test_train_topk_reconstructs_sparse_data(trained, dirs):
    sae, history, x = trained
    assert sae.n_features == 4 * D and sae.d_model == D and sae.k == 4 and sae.activation == "topk"
    assert len(history) == 6 and history[-1] < history[0]
    held_out = sparse_data(1000, 1, dirs)
    assert fvu(sae, held_out) < 0.2
    assert torch.allclose(sae.decoder.norm(dim=1), torch.ones(sae.n_features), atol=1e-5)  # unit decoder rows
    stats = sae_stats(sae, held_out)
    assert stats["fvu"] == pytest.approx(fvu(sae, held_out))
    assert 0 < stats["l0"] <= 4 and 0 <= stats["dead_fraction"] < 1 and stats["eval_tokens"] == 1000
    # an untrained SAE of the same shape reconstructs much worse
    untrained, _ = train_topk(x, SAESettings(expansion=4, k=4, epochs=0, seed=0), progress=False)
    assert fvu(untrained, held_out) > 2 * fvu(sae, held_out)


def test_encode_has_exactly_k_nonzeros_per_row(trained):
    sae, _, x = trained
    with torch.no_grad():
        z = sae.encode(x[:500])
    assert z.shape == (500, sae.n_features)
    assert (z != 0).sum(1).tolist() == [4] * 500
    assert (z >= 0).all()
    with torch.no_grad():  # the kept latents are the k largest pre-activations
        pre = sae.pre_activations(x[:500])
    top = pre.topk(4, dim=1).indices.sort(1).values
    assert torch.equal((z != 0).nonzero()[:, 1].reshape(500, 4), top)


def test_save_and_load_round_trip(trained, tmp_path):
    sae, _, x = trained
    path = sae.save(tmp_path / "sae" / "layer3.safetensors", layer="3")
    loaded = SAE.load(path)
    assert (loaded.activation, loaded.k, loaded.input_scale, loaded.subtract_decoder_bias) == \
        ("topk", 4, sae.input_scale, True)
    with torch.no_grad():
        z = sae.encode(x[:100])
        assert torch.equal(loaded.encode(x[:100]), z)
        assert torch.equal(loaded.decode(z), sae.decode(z))


def test_features_frame_rows_are_unit_decoder_directions(trained):
    sae, _, _ = trained
    frame = features_frame(sae, layer=7)
    assert frame.height == sae.n_features and frame.schema["vector"] == pl.Array(pl.Float32, D)
    assert frame["layer"].unique().to_list() == [7] and frame["feature"].to_list() == list(range(sae.n_features))
    vectors = np.array(frame["vector"].to_list())
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(vectors[5], (sae.decoder[5] / sae.decoder[5].norm()).detach().numpy(), atol=1e-6)


def jumprelu_sae(**kwargs) -> SAE:
    encoder = torch.eye(3)
    return SAE(encoder, torch.zeros(3), torch.eye(3) * 2, torch.zeros(3), activation="jumprelu",
               threshold=torch.tensor([0.5, 1.0, 2.0]), **kwargs)


def test_jumprelu_zeroes_pre_activations_below_threshold(tmp_path):
    sae = jumprelu_sae()
    x = torch.tensor([[0.4, 1.5, 2.5], [0.6, 0.9, 2.0], [-1.0, 3.0, 1.9]])
    with torch.no_grad():
        z = sae.encode(x)
    assert z.tolist() == [[0.0, 1.5, 2.5], [0.6000000238418579, 0.0, 0.0], [0.0, 3.0, 0.0]]
    with torch.no_grad():
        assert sae.decode(z).tolist() == (2 * z).tolist()
    loaded = SAE.load(sae.save(tmp_path / "j.safetensors"))
    assert loaded.activation == "jumprelu" and loaded.threshold.tolist() == [0.5, 1.0, 2.0]
    with torch.no_grad():
        assert torch.equal(loaded.encode(x), z)


def test_input_scale_and_decoder_bias_in_encode_and_decode():
    sae = SAE(torch.eye(2), torch.tensor([0.0, -1.0]), torch.eye(2), torch.tensor([1.0, 1.0]), activation="topk",
              k=1, input_scale=2.0)
    with torch.no_grad():
        z = sae.encode(torch.tensor([[3.0, 2.0]]))  # scaled (6, 4) - b_dec (1, 1) + b_enc (0, -1) = (5, 2)
        assert z.tolist() == [[5.0, 0.0]]
        assert sae.decode(z).tolist() == [[3.0, 0.5]]  # ((5, 0) + (1, 1)) / 2


def test_constructor_and_load_errors(tmp_path):
    with pytest.raises(SAEError, match="unknown SAE activation"):
        SAE(torch.eye(2), torch.zeros(2), torch.eye(2), torch.zeros(2), activation="relu")
    with pytest.raises(SAEError, match="needs k"):
        SAE(torch.eye(2), torch.zeros(2), torch.eye(2), torch.zeros(2), activation="topk")
    with pytest.raises(SAEError, match="threshold"):
        SAE(torch.eye(2), torch.zeros(2), torch.eye(2), torch.zeros(2), activation="jumprelu")
    path = tmp_path / "no_encoder.safetensors"
    save_file({"decoder": torch.eye(2), "encoder_bias": torch.zeros(2)}, str(path))
    with pytest.raises(SAEError, match=r"no_encoder\.safetensors: missing \['encoder'\]"):
        SAE.load(path)
    with pytest.raises(SAEError, match="not a readable SAE"):
        SAE.load(tmp_path / "absent.safetensors")


def test_from_download_reads_a_jumprelu_layer(tmp_path):
    path = tmp_path / "ls.safetensors"
    tensors = {"encoder": torch.eye(4), "encoder_bias": torch.zeros(4), "decoder": torch.eye(4),
               "decoder_bias": torch.ones(4), "threshold": torch.full((4,), 0.5)}
    hyperparams = json.dumps({"dataset_average_activation_norm": {"in": 4.0}})
    save_file(tensors, str(path), metadata={"hyperparams": hyperparams})
    sae = from_download(path)
    assert sae.activation == "jumprelu" and not sae.subtract_decoder_bias
    assert sae.input_scale == pytest.approx(math.sqrt(4) / 4.0)
    with torch.no_grad():
        assert sae.encode(torch.tensor([[4.0, 1.0, 0.0, 2.0]])).tolist() == [[2.0, 0.0, 0.0, 1.0]]
    save_file(tensors, str(path))  # no hyperparams: the input scale is unknown
    with pytest.raises(SAEError, match="no dataset_average_activation_norm"):
        from_download(path)
    del tensors["encoder"]
    save_file(tensors, str(path), metadata={"hyperparams": hyperparams})
    with pytest.raises(SAEError, match="no encoder weights"):
        from_download(path)


def test_sae_for_layer_trains_on_train_rows_and_measures_on_eval_rows(dirs, tmp_path):
    torch.set_num_threads(1)
    n = 600
    hidden = sparse_data(n, 2, dirs).to(torch.float16)
    tokens = pl.DataFrame({"seq_id": np.arange(n) // 10, "position": np.arange(n) % 10,
                           "split": ["eval" if (i // 10) % 5 == 4 else "train" for i in range(n)]})
    settings = {"backend": "train", "expansion": 2, "k": 3, "epochs": 1, "batch_size": 64, "lr": 3e-3}
    sae, stats = sae_for_layer(settings, hidden, tokens, layer=2, seed=0, scratch=tmp_path)
    assert (stats["layer"], stats["backend"], stats["k"], stats["expansion"]) == (2, "train", 3, 2)
    assert stats["train_tokens"] == 480 - 48 and stats["eval_tokens"] == 120 - 12  # position 0 excluded
    assert len(stats["loss_by_epoch"]) == 1
    with pytest.raises(SAEError, match="unknown backend 'magic'"):
        sae_for_layer({"backend": "magic"}, hidden, tokens, layer=2, seed=0, scratch=tmp_path)
    with pytest.raises(SAEError, match="no eval tokens"):
        sae_for_layer(settings, hidden, tokens.with_columns(pl.lit("train").alias("split")), 2, 0, tmp_path)
