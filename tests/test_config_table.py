"""A table of malformed configs, each stopped before any job with the key path and what to do.

Every row edits the smoke config in one place and names the key path the error must start with; the check
is the one the Snakefile runs before it builds the DAG (schema, cross-references, templates, the files the
config names). A few rows go through `snakemake -n` too, with the config files written as a user would.
"""

from __future__ import annotations

import copy
import json
import math

import pytest
import yaml
from conftest import REPO, output_of, run_snakemake

from introspect.config import ConfigError, check_config
from introspect.configfiles import ConfigFileError, read_config_file

SMOKE = yaml.safe_load((REPO / "configs/smoke.yaml").read_text())
DELETE = object()


def edited(edits: dict) -> dict:
    """The smoke config with `edits` ({"a.b.0.c": value or DELETE}) applied."""
    config = copy.deepcopy(SMOKE)
    for dotted, value in edits.items():
        *parents, last = [int(p) if p.isdigit() else p for p in dotted.split(".")]
        node = config
        for part in parents:
            node = node[part]
        if value is DELETE:
            del node[last]
        else:
            node[last] = value
    return config


RUN = "features.explain.runs.self-full"
TRAIN = "patching.explain.train"
BAD = [
    # (edits, the key path the message names, a phrase of the message)
    ({"seed": "zero"}, "seed", "is not of type"),
    ({"compute.device": "tpu"}, "compute.device", "is not one of"),
    ({"compute.dtype": "float16"}, "compute.dtype", "is not one of"),
    ({"compute.threads": 0}, "compute.threads", "minimum"),
    ({"featurs": {}}, "featurs", "unknown key"),
    ({"materialise.models": ["tiny-nothing"]}, "materialise.models[0]", "not a model in the registry"),
    ({"models.tiny-smollm2.source": "local"}, "models.tiny-smollm2.source", "is not one of"),
    ({"models.tiny-smollm2.n_layers": 0}, "models.tiny-smollm2.n_layers", "minimum"),
    ({"models.tiny-smollm2.tokenizer": "tiny-gemma3"}, "models.tiny-smollm2.tokenizer", "itself a random model"),
    ({"models.tiny-smollm2.hidden_size": 66}, "models.tiny-smollm2.hidden_size", "not divisible"),
    ({"patching.n_pairs": 0}, "patching.n_pairs", "minimum"),
    ({"patching.n_pairs": 100000}, "patching.n_pairs", "lower n_pairs"),
    ({"patching.n_options": 60}, "patching.n_options", "lower n_options"),
    ({"patching.facts": {"backend": "files"}}, "patching.facts.path", "required"),
    ({"patching.facts": {"backend": "files", "path": "no/such/facts.json"}}, "patching.facts.path", "does not exist"),
    ({"patching.targets.tiny-smollm2.prompt_format": "{statement} {choices}"},
     "patching.targets.tiny-smollm2.prompt_format", "{choices}"),
    ({"patching.targets.tiny-smollm2.prompt_format": "Answer with {options}."},
     "patching.targets.tiny-smollm2.prompt_format", "no {statement}"),
    ({"patching.targets.tiny-nothing": {"prompt_format": "{statement}", "chat": False}},
     "patching.targets.tiny-nothing", "not a model in the registry"),
    ({"patching.balance.max_ratio": math.nan}, "patching.balance.max_ratio", ".nan is not a number"),
    ({"patching.balance.test_fraction": 1.5}, "patching.balance.test_fraction", "maximum"),
    ({"patching.explain.rows.0.variant": "retrained"}, "patching.explain.rows.0.variant", "is not one of"),
    ({"patching.explain.rows.0.explainer": "tiny-nothing"}, "patching.explain.rows[0].explainer", "not a model"),
    ({f"{TRAIN}.lr": -1}, f"{TRAIN}.lr", "minimum"),
    ({f"{TRAIN}.tuning": "qlora"}, f"{TRAIN}.tuning", "is not one of"),
    ({f"{TRAIN}.engine": "deepspeed"}, f"{TRAIN}.deepspeed_config", "engine deepspeed (set in"),
    ({f"{TRAIN}.engine": "deepspeed", f"{TRAIN}.deepspeed_config": "configs/deepspeed/zero9.json"},
     f"{TRAIN}.deepspeed_config", "does not exist"),
    ({"hints.questions.n": 100000}, "hints.questions.n", "builtin generator makes"),
    ({"hints.questions": {"backend": "files", "path": "no/such/mmlu"}}, "hints.questions.path", "does not exist"),
    ({"hints.targets.tiny-smollm2.hint_format": "Hint:"}, "hints.targets.tiny-smollm2.hint_format",
     "must contain '{letter}'"),
    ({"hints.targets.tiny-smollm2.hint_format": "Hint: {letter} ({answer})"},
     "hints.targets.tiny-smollm2.hint_format", "{answer}"),
    ({"hints.targets.tiny-smollm2.hint_format": "Hint: {letter} }"}, "hints.targets.tiny-smollm2.hint_format",
     "not a template"),
    ({"hints.explain.rows.0.target": "smollm2-135m"}, "hints.explain.rows[0].target", "not one of hints.targets"),
    ({"features.corpus": {"backend": "files", "path": "no/such/corpus.txt"}}, "features.corpus.path",
     "does not exist"),
    ({"features.corpus.eval_fraction": 0}, "features.corpus.eval_fraction", "less than or equal"),
    ({"features.activations.seq_len": 10000}, "features.activations.seq_len", "not one sequence fits"),
    ({"features.targets.tiny-smollm2.layers": [9]}, "features.targets.tiny-smollm2.layers", "past the model's depth"),
    ({"features.sae.k": 0}, "features.sae.k", "minimum"),
    ({"features.similarity.n_features": 50}, "features.similarity.n_features", "features.split.n_test"),
    ({"features.similarity.explainers": ["tiny-nothing"]}, "features.similarity.explainers[0]", "not a model"),
    ({f"{RUN}.train": {"tunning": "lora"}}, f"{RUN}.train.tunning", "unknown key"),
    ({f"{RUN}.train": {"lr": -1}}, f"{RUN}.train.lr", "minimum"),
    ({f"{RUN}.train": {"lora_r": 0}}, f"{RUN}.train.lora_r", "minimum"),
    ({f"{RUN}.train": {"tuning": "qlora"}}, f"{RUN}.train.tuning", "is not one of"),
    ({f"{RUN}.train": {"epochs": 1.5}}, f"{RUN}.train.epochs", "is not of type"),
    ({f"{RUN}.align": "input"}, f"{RUN}.align", "only a pre-trained projection"),
    ({"features.explain.runs.nn_all": {"explainer": "tiny-smollm2"}}, "features.explain.runs.nn_all",
     "taken by a baseline"),
    ({"features.explain.runs.other-random.projection": "none"}, "features.explain.runs.other-random.projection",
     "differ in hidden size"),
    ({"features.explain.baselines": ["nn_everything"]}, "features.explain.baselines.0", "is not one of"),
    ({"features.explain.judge.backend": "gpt"}, "features.explain.judge.backend", "is not one of"),
    ({"features.explain.scaling.runs": ["nothing"]}, "features.explain.scaling.runs[0]", "is not one of"),
    ({"features.explain.table4.runs.self-full": {"explainer": "tiny-gemma3"}},
     "features.explain.table4.runs.self-full", "rename one"),
    ({"features.explain.target": "tiny-gemma4"}, "features.explain.target", "not one of features.targets"),
    ({"features.sae": {"backend": "llamascope"}}, "features.targets.tiny-smollm2.sae.repo", "required"),
    ({"features.simulator": {"backend": "openai"}}, "features.simulator.model", "required"),
    ({"patching": DELETE}, "features", "add a patching section"),
]


def problems_of(config: dict, root=REPO) -> list[str]:
    with pytest.raises(ConfigError) as info:
        check_config(config, root=root)
    return info.value.problems


def test_the_table_is_large():
    assert len(BAD) >= 40


@pytest.mark.parametrize("edits, key, phrase", BAD, ids=[key for _, key, _ in BAD])
def test_a_malformed_config_names_its_key(edits, key, phrase):
    problems = problems_of(edited(edits))
    hits = [p for p in problems if p.startswith(key) and phrase in p]
    assert hits, f"no problem names {key!r} with {phrase!r}: {problems}"


def test_the_unedited_smoke_config_passes_every_check():
    assert check_config(copy.deepcopy(SMOKE), root=REPO) == SMOKE


def test_valid_edge_values_pass():
    config = edited({"features.activations.max_tokens": None,  # the whole corpus
                     "patching.balance.max_ratio": math.inf})
    assert check_config(config, root=REPO) == config


def test_deepspeed_settings_are_checked_as_each_run_merges_them():
    # engine in the shared settings, the JSON in the run: valid; a run's missing JSON names the run's key
    config = edited({"features.explain.train.engine": "deepspeed",
                     "features.explain.train.deepspeed_config": "configs/deepspeed/zero1.json"})
    check_config(config, root=REPO)
    config["features"]["explain"]["runs"]["self-full"]["train"] = {"deepspeed_config": "configs/deepspeed/zero7.json"}
    assert problems_of(config) == [f"{RUN}.train.deepspeed_config: 'configs/deepspeed/zero7.json' does not exist "
                                   f"(looked for {REPO / 'configs/deepspeed/zero7.json'}); name a DeepSpeed JSON "
                                   "config relative to the workflow folder (configs/deepspeed/*.json)"]
    # a run that turns DeepSpeed on without a JSON anywhere: named once, with where the engine was set
    config = edited({f"{RUN}.train": {"engine": "deepspeed"}})
    assert problems_of(config) == [f"features.explain.train.deepspeed_config (run {RUN}): engine deepspeed (set "
                                   f"in {RUN}.train.engine) needs a DeepSpeed JSON config, e.g. "
                                   "configs/deepspeed/zero1.json or zero3.json"]


def test_json_config_files_read_as_json(tmp_path):
    path = tmp_path / "c.json"
    path.write_text('{\n\t"materialise": {"logits_atol": 1e-4}\n}')  # tab-indented JSON is valid JSON
    assert read_config_file(path) == {"materialise": {"logits_atol": 1e-4}}
    path.write_text('{"seed": 0, "seed": 1}')
    with pytest.raises(ConfigFileError, match="'seed' is written twice"):
        read_config_file(path)


def test_check_config_command_merges_an_overlay_over_its_base(tmp_path, capsys):
    from introspect.cli import main

    overlay = tmp_path / "overlay.yaml"
    overlay.write_text("seed: 3\n")
    assert main(["check-config", str(REPO / "configs/smoke.yaml"), str(overlay)]) == 0
    overlay.write_text("seed: three\n")
    assert main(["check-config", str(REPO / "configs/smoke.yaml"), str(overlay)]) == 2
    assert "seed: 'three' is not of type integer" in capsys.readouterr().err


def test_a_local_facts_file_is_checked_for_options_and_pairs(tmp_path):
    records = [{"case_id": i, "requested_rewrite": {
        "prompt": "{} is located in", "subject": f"Place {i}", "relation_id": "P1",
        "target_true": {"str": city}, "target_new": {"str": "Oslo"}}}
        for i, city in enumerate(["Paris", "Rome", "Madrid"])]
    (tmp_path / "facts.json").write_text(json.dumps(records))
    config = edited({"patching.facts": {"backend": "files", "path": "facts.json"}})
    assert any(p.startswith("patching.n_options") and "the most: 3" in p for p in problems_of(config, tmp_path))
    config["patching"].update(n_options=3, n_pairs=100)
    assert any(p.startswith("patching.n_pairs") for p in problems_of(config, tmp_path))


def test_a_damaged_facts_file_is_named_before_any_job(tmp_path):
    (tmp_path / "facts.json").write_bytes(b"[{\"case_id\": 1,")
    config = edited({"patching.facts": {"backend": "files", "path": "facts.json"}})
    [problem] = problems_of(config, tmp_path)
    assert problem.startswith("patching.facts:") and "facts.json" in problem


@pytest.mark.parametrize("text, where, phrase", [
    ("seed: 0\nseed: 1\n", ":2:1:", "written twice (first at line 1)"),
    ("seed: 0\ncompute:\n\tdevice: cpu\n", ":3:", "tab"),
    ("seed: 0\ncompute: [cpu\n", ":3:", "expected"),
    ("- seed\n", "", "top level is a list"),
    ("", "", "empty"),
])
def test_config_file_problems_name_file_and_line(tmp_path, text, where, phrase):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigFileError) as info:
        read_config_file(path)
    message = str(info.value)
    assert message.startswith(f"{path}{where}") and phrase in message, message


def test_a_non_utf8_config_file_names_its_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_bytes(b"seed: 0\nname: caf\xe9\n")
    with pytest.raises(ConfigFileError, match=r"bad.yaml:2: byte 0xe9 is not UTF-8"):
        read_config_file(path)


def _write(path, config):
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def test_snakemake_dry_run_stops_on_each_kind_of_problem_before_any_job(tmp_path):
    """The Snakefile's checks run in `snakemake -n`: schema, cross-reference, file and YAML problems."""
    cases = {
        "nan": (_write(tmp_path / "nan.yaml", edited({"patching.balance.max_ratio": math.nan})),
                "patching.balance.max_ratio: .nan is not a number"),
        "run-train": (_write(tmp_path / "train.yaml", edited({f"{RUN}.train": {"tunning": "lora"}})),
                      f"{RUN}.train.tunning: unknown key"),
        "missing-file": (_write(tmp_path / "facts.yaml", edited({"patching.facts": {"backend": "files",
                                                                                    "path": "nope.json"}})),
                         "patching.facts.path: 'nope.json' does not exist"),
    }
    duplicate = tmp_path / "duplicate.yaml"
    duplicate.write_text((REPO / "configs/smoke.yaml").read_text() + "\nseed: 3\n")
    cases["duplicate"] = (duplicate, "the key 'seed' is written twice (first at line 3)")
    for name, (path, expected) in cases.items():
        workdir = tmp_path / name
        workdir.mkdir()
        proc = run_snakemake(workdir, "-n", configfile=path, timeout=300)
        text = output_of(proc)
        assert proc.returncode != 0, name
        assert expected in text, (name, text[-2000:])
        assert "Job stats" not in text and "rule " not in text, name


def test_a_syntax_error_in_the_default_config_names_its_line(tmp_path):
    """config.yaml is read by the Snakefile's own strict check before Snakemake reads it."""
    (tmp_path / "config.yaml").write_text("seed: 0\ncompute:\n\tdevice: cpu\n")
    proc = run_snakemake(tmp_path, "-n", configfile=None, timeout=300)
    text = output_of(proc)
    assert proc.returncode != 0
    assert "config.yaml:3:1:" in text and "YAML indents with spaces only" in text, text[-2000:]
