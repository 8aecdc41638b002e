"""The config schema and cross-reference checks reject bad configs with messages that name the key."""

from __future__ import annotations

import copy

import pytest
import yaml
from conftest import REPO

from introspect.config import ConfigError, check_config

SHIPPED = ["config.yaml", "configs/smoke.yaml", "configs/paper.yaml"]


def load(name: str = "configs/smoke.yaml") -> dict:
    return yaml.safe_load((REPO / name).read_text())


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_configs_are_valid(name):
    config = load(name)
    assert check_config(copy.deepcopy(config)) == config


def problems_of(config: dict) -> list[str]:
    with pytest.raises(ConfigError) as info:
        check_config(config)
    return info.value.problems


def test_wrong_type_names_the_key_path():
    config = load()
    config["models"]["tiny-gemma3"]["n_layers"] = "two"
    assert problems_of(config) == ["models.tiny-gemma3.n_layers: 'two' is not of type integer"]


def test_unknown_key_names_the_key_and_the_allowed_ones():
    config = load()
    config["compute"]["devise"] = "cpu"
    [problem] = problems_of(config)
    assert problem.startswith("compute.devise: unknown key")
    assert "device" in problem and "gpus" in problem


def test_unknown_top_level_key():
    config = load()
    config["tabels"] = {}
    [problem] = problems_of(config)
    assert problem.startswith("tabels: unknown key")


def test_unknown_model_source_lists_the_allowed_ones():
    config = load()
    config["models"]["smollm2-135m"]["source"] = "ollama"
    [problem] = problems_of(config)
    assert problem.startswith("models.smollm2-135m.source: 'ollama' is not one of")
    assert "gguf_wheel" in problem and "hf" in problem and "random" in problem


def test_unknown_device():
    config = load()
    config["compute"]["device"] = "gpu"
    assert problems_of(config) == ["compute.device: 'gpu' is not one of ['auto', 'cpu', 'cuda']"]


def test_unknown_model_name_in_materialise_list():
    config = load()
    config["materialise"]["models"].append("llama-9b")
    [problem] = problems_of(config)
    assert problem.startswith("materialise.models[2]: 'llama-9b' is not a model in the registry")


def test_random_model_needs_a_real_tokenizer_source():
    config = load()
    config["models"]["tiny-smollm2"]["tokenizer"] = "smollm3"
    config["models"]["tiny-gemma3"]["tokenizer"] = "tiny-smollm2"
    problems = problems_of(config)
    assert any(p.startswith("models.tiny-smollm2.tokenizer: 'smollm3' is not a model") for p in problems)
    assert any(p.startswith("models.tiny-gemma3.tokenizer: 'tiny-smollm2' is itself a random model") for p in problems)


def test_random_model_shape_checks():
    config = load()
    config["models"]["tiny-gemma3"]["hidden_size"] = 81
    [problem] = problems_of(config)
    assert problem.startswith("models.tiny-gemma3.hidden_size: 81 is not divisible by n_heads 4")


def test_every_problem_is_reported_at_once():
    config = load()
    config["seed"] = "zero"
    config["compute"]["device"] = "tpu"
    del config["materialise"]["logits_atol"]
    problems = problems_of(config)
    assert len(problems) == 3
    assert "seed: 'zero' is not of type integer" in problems


def test_unknown_facts_backend_names_the_key():
    config = load()
    config["patching"]["facts"]["backend"] = "wikidata"
    [problem] = problems_of(config)
    assert problem == "patching.facts.backend: 'wikidata' is not one of ['builtin', 'files', 'hf']"


def test_layer_chunk_past_the_models_depth_names_the_key():
    config = load()
    config["patching"]["targets"]["tiny-gemma3"]["chunks"] = [[0], [1, 2]]
    [problem] = problems_of(config)
    assert problem == ("patching.targets.tiny-gemma3.chunks[1]: layers [2] are past the model's depth "
                       "(2 layers: 0..1)")


def test_explain_rows_must_name_registry_models_and_configured_targets():
    config = load()
    config["patching"]["explain"]["rows"].append({"target": "tiny-gemma3", "explainer": "qwen3-8b",
                                                  "variant": "trained"})
    config["patching"]["explain"]["rows"].append({"target": "gemma3-270m", "explainer": "tiny-gemma3",
                                                  "variant": "trained"})
    problems = problems_of(config)
    assert "patching.explain.rows[5].explainer: 'qwen3-8b' is not a model in the registry" in problems
    assert "patching.explain.rows[6].target: 'gemma3-270m' is not one of patching.targets" in problems


def test_files_backend_needs_a_path():
    config = load()
    config["patching"]["facts"] = {"backend": "files"}
    assert problems_of(config) == ["patching.facts.path: required for backend files"]


def test_hint_config_errors_name_the_key():
    config = load()
    config["hints"]["questions"]["backend"] = "trivia"
    config["hints"]["targets"]["tiny-gemma3"]["hint_format"] = "Hint: B"
    problems = problems_of(config)
    assert "hints.questions.backend: 'trivia' is not one of ['builtin', 'files', 'hf']" in problems
    assert any(p.startswith("hints.targets.tiny-gemma3.hint_format:") for p in problems)
    config = load()
    config["hints"]["questions"] = {"backend": "files"}
    config["hints"]["explain"]["rows"].append({"target": "gemma3-270m", "explainer": "tiny-gemma3",
                                               "variant": "trained"})
    assert problems_of(config) == ["hints.explain.rows[4].target: 'gemma3-270m' is not one of hints.targets",
                                   "hints.questions.path: required for backend files"]


def test_feature_config_errors_name_the_key():
    config = load()
    config["features"]["targets"]["tiny-smollm2"]["layers"] = [1, 4, 7]
    config["features"]["similarity"]["explainers"].append("qwen3-8b")
    assert problems_of(config) == [
        "features.targets.tiny-smollm2.layers: [4, 7] are past the model's depth (4 layers: 0..3)",
        "features.similarity.explainers[2]: 'qwen3-8b' is not a model in the registry"]
    config = load()
    config["features"]["sae"]["backend"] = "gemmascope-v9"
    assert problems_of(config) == ["features.sae.backend: 'gemmascope-v9' is not one of ['train', 'llamascope', 'gemmascope']"]


def test_feature_backends_need_their_options():
    config = load()
    config["features"]["targets"]["tiny-smollm2"]["sae"] = {"backend": "llamascope"}
    config["features"]["targets"]["tiny-smollm2"]["labels"] = {"backend": "neuronpedia", "model_id": "m"}
    config["features"]["simulator"] = {"backend": "openai"}
    config["features"]["corpus"] = {"backend": "hf"}
    assert problems_of(config) == [
        "features.targets.tiny-smollm2.sae.repo: required for backend llamascope",
        "features.targets.tiny-smollm2.labels.sae_id: required for backend neuronpedia",
        "features.corpus.dataset: required for backend hf",
        "features.simulator.model: required for backend openai"]
    config = load()
    del config["patching"]
    assert any("dACT" in p for p in problems_of(config))


def test_feature_explain_config_errors_name_the_key():
    config = load()
    explain = config["features"]["explain"]
    explain["runs"]["gold"] = {"explainer": "tiny-smollm2"}
    explain["runs"]["selfie-tiny-smollm2"] = {"explainer": "tiny-smollm2"}  # a SelfIE baseline's name and paths
    explain["runs"]["other-none"] = {"explainer": "tiny-gemma3", "projection": "none"}
    explain["runs"]["ghost"] = {"explainer": "llama-9000"}
    explain["target"] = "smollm2-135m"
    problems = problems_of(config)
    assert "features.explain.target: 'smollm2-135m' is not one of features.targets" in problems
    assert "features.explain.runs.gold: the name is taken by a baseline or a scaling point; rename the run" in problems
    assert ("features.explain.runs.selfie-tiny-smollm2: the name is taken by a baseline or a scaling point; rename "
            "the run") in problems
    assert "features.explain.runs.ghost.explainer: 'llama-9000' is not a model in the registry" in problems
    config = load()
    config["features"]["explain"]["runs"]["other-none"] = {"explainer": "tiny-gemma3", "projection": "none"}
    assert problems_of(config) == ["features.explain.runs.other-none.projection: none, but tiny-gemma3 (80) and "
                                   "tiny-smollm2 (64) differ in hidden size; use random or pretrained"]
    config = load()
    config["features"]["explain"]["runs"]["self-aligned"] = {"explainer": "tiny-smollm2", "align": "input"}
    assert problems_of(config) == ["features.explain.runs.self-aligned.align: only a pre-trained projection is "
                                   "aligned; set projection: pretrained or drop align"]


def test_table4_and_scaling_config_errors_name_the_key():
    config = load()
    explain = config["features"]["explain"]
    explain["table4"]["runs"]["self-full"] = {"explainer": "tiny-gemma3"}  # Table 1 has a run of that name
    explain["table4"]["target"] = "gemma3-270m"
    explain["scaling"]["runs"] = ["self-full", "t4-self"]
    problems = problems_of(config)
    assert "features.explain.table4.target: 'gemma3-270m' is not one of features.targets" in problems
    assert any(p.startswith("features.explain.table4.runs.self-full: Table 1 has a run of the same name") for p in problems)
    assert "features.explain.scaling.runs[1]: 't4-self' is not one of features.explain.runs" in problems
    config = load()
    config["features"]["explain"]["baselines"] = ["nn_all", "random"]
    config["features"]["explain"]["train"]["vector_norm"] = "tokens"
    problems = problems_of(config)
    assert any("features.explain.baselines" in p for p in problems)
    assert any("vector_norm" in p for p in problems)


def test_scaled_names_round_trip():
    from introspect.names import scaled_name, split_scaled

    assert scaled_name("self-full", 100) == "self-full@n100"
    assert split_scaled("self-full@n100") == ("self-full", 100)
    assert split_scaled("nn_all") == ("nn_all", None) and split_scaled("odd@nx") == ("odd@nx", None)
