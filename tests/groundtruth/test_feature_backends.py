"""The paper-config backends of the feature stages, offline: LlamaScope SAE from a local copy, a hub-style
corpus through `datasets`, Neuronpedia labels joined to exemplars."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
import torch
from safetensors.torch import save_file

from introspect.groundtruth.labels import LABELS_SCHEMA, neuronpedia_labels
from introspect.groundtruth.sae import features_frame, sae_for_layer
from introspect.sources.corpus import CorpusError, hf_documents

D, F = 16, 32


def _llamascope_copy(root, layer):
    folder = root / f"Llama3_1-8B-Base-L{layer}R-32x"
    (folder / "checkpoints").mkdir(parents=True)
    gen = torch.Generator().manual_seed(0)
    save_file({"encoder.weight": torch.randn(F, D, generator=gen), "encoder.bias": torch.zeros(F),
               "decoder.weight": torch.randn(D, F, generator=gen), "decoder.bias": torch.zeros(D)},
              str(folder / "checkpoints" / "final.safetensors"))
    (folder / "hyperparams.json").write_text(json.dumps({
        "d_model": D, "d_sae": F, "act_fn": "jumprelu", "jump_relu_threshold": 0.5,
        "dataset_average_activation_norm": {"in": 8.0, "out": 8.0}}))
    return root


def _tokens(n):
    return pl.DataFrame({"seq_id": [0] * n, "doc_id": ["d"] * n, "split": ["train"] * (n // 2) + ["eval"] * (n - n // 2),
                         "position": list(range(n)), "token_id": list(range(n)), "text": ["x"] * n})


def test_llamascope_backend_gives_a_jumprelu_sae_with_stats(tmp_path):
    repo = _llamascope_copy(tmp_path / "repo", 5)
    hidden = torch.randn(40, D, generator=torch.Generator().manual_seed(1)).half()
    sae, stats = sae_for_layer({"backend": "llamascope", "repo": str(repo)}, hidden, _tokens(40), 5, 0,
                               tmp_path / "scratch")
    assert sae.activation == "jumprelu" and sae.n_features == F
    assert sae.input_scale == pytest.approx(np.sqrt(D) / 8.0)  # dataset_average_activation_norm folded in
    assert stats["backend"] == "llamascope" and stats["eval_tokens"] == 20 and 0 <= stats["dead_fraction"] <= 1
    z = sae.encode(hidden.float())
    assert ((z == 0) | (z > 0.5)).all()  # JumpReLU: zero or above the threshold
    vectors = features_frame(sae, 5)
    assert vectors.height == F and np.allclose(np.linalg.norm(vectors["vector"].to_numpy(), axis=1), 1, atol=1e-5)


def test_llamascope_backend_refuses_a_layer_of_another_width(tmp_path):
    repo = _llamascope_copy(tmp_path / "repo", 5)
    with pytest.raises(Exception, match="16|d_model"):
        sae_for_layer({"backend": "llamascope", "repo": str(repo)}, torch.zeros(10, 24).half(), _tokens(10), 5, 0,
                      tmp_path / "scratch")


def test_hf_corpus_backend_streams_a_local_dataset(tmp_path):
    folder = tmp_path / "web"
    folder.mkdir()
    pl.DataFrame({"text": ["word " * 30, "too short", "other " * 25], "id": [1, 2, 3]}).write_parquet(folder / "a.parquet")
    docs = hf_documents(str(folder), max_docs=5)
    assert [d.text.split()[0] for d in docs] == ["word", "other"] and docs[0].source == f"hf:{folder}"


def test_hf_corpus_backend_offline_says_what_to_do(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CorpusError, match="backend: builtin, or backend: files"):
        hf_documents("HuggingFaceFW/fineweb-does-not-exist", "sample-10BT")


class FixedSimulator:
    def score_many(self, descriptions, exemplars):
        return np.array([0.5 if "city" in d else 0.1 for d in descriptions])


def test_neuronpedia_labels_take_the_first_description_per_feature():
    windows = pl.DataFrame({"window_id": [0, 1], "tokens": [["a", "b"], ["c", "d"]]})
    exemplar_table = pl.DataFrame({"layer": [3, 3], "feature": [7, 8], "windows": [[0, 1], [1, 0]],
                                   "activations": [[[1.0, 0.0], [0.0, 2.0]], [[0.5, 0.0], [0.0, 0.0]]]})
    explanations = pl.DataFrame({"layer": [3, 3, 3], "feature": [7, 7, 9],
                                 "description": ["city names", "names of cities", "numbers"]})
    labels = neuronpedia_labels(explanations, exemplar_table, windows, FixedSimulator(), n_top=1)
    assert labels.schema == pl.Schema(LABELS_SCHEMA)
    # 8 has no label; 9 has a label but no exemplars: it keeps the label, unscored
    assert labels.select("feature", "label", "score").rows() == [(7, "city names", 0.5), (9, "numbers", None)]
    assert neuronpedia_labels(explanations, exemplar_table, windows, FixedSimulator(), n_top=1,
                              max_scored=0)["score"].to_list() == [None, None]


def test_gemmascope_backend_from_a_local_copy(tmp_path):
    folder = tmp_path / "repo" / "layer_4" / "width_131k" / "canonical"
    folder.mkdir(parents=True)
    gen = np.random.default_rng(0)
    np.savez(folder / "params.npz", W_enc=gen.normal(size=(D, F)).astype(np.float32),
             W_dec=gen.normal(size=(F, D)).astype(np.float32), b_enc=np.zeros(F, np.float32),
             b_dec=np.zeros(D, np.float32), threshold=np.full(F, 0.25, np.float32))
    hidden = torch.randn(30, D, generator=torch.Generator().manual_seed(2)).half()
    sae, stats = sae_for_layer({"backend": "gemmascope", "repo": str(tmp_path / "repo")}, hidden, _tokens(30), 4, 0,
                               tmp_path / "scratch")
    assert sae.activation == "jumprelu" and sae.input_scale == 1.0 and stats["backend"] == "gemmascope"
    x = hidden[:3].float()
    pre = x @ torch.from_numpy(np.load(folder / "params.npz")["W_enc"])
    torch.testing.assert_close(sae.encode(x), pre * (pre > 0.25))
    with pytest.raises(Exception, match="layer_5/width_131k/canonical/params.npz"):
        sae_for_layer({"backend": "gemmascope", "repo": str(tmp_path / "repo")}, hidden, _tokens(30), 5, 0,
                      tmp_path / "scratch")
