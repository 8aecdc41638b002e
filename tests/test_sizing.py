"""Job sizing (introspect.sizing): the rules it promises, on the shipped configs and on small edits of them."""

from __future__ import annotations

import copy
import math
import re
import subprocess
import sys

import pytest
import yaml
from conftest import REPO

from introspect import sizing
from introspect.explainers import memory
from introspect.sizing import GB, ModelSize, Sizer, gpus_to_hold, job_resources

PAPER = yaml.safe_load((REPO / "configs/paper.yaml").read_text())
DEFAULT = yaml.safe_load((REPO / "config.yaml").read_text())
SMOKE = yaml.safe_load((REPO / "configs/smoke.yaml").read_text())
LLAMA_8B_BF16 = 8_030_261_248 * 2
LLAMA_70B_BF16 = 70_553_706_496 * 2


def paper(edit=None) -> dict:
    config = copy.deepcopy(PAPER)
    if edit:
        edit(config)
    return config


def test_the_module_imports_no_torch():
    code = "import sys; sys.path.insert(0, 'lib'); import introspect.sizing; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_gpus_to_hold_leave_15_percent_headroom():
    assert gpus_to_hold(0) == 0
    assert gpus_to_hold(LLAMA_8B_BF16) == 1
    assert gpus_to_hold(69.5 * GB) == 1 and gpus_to_hold(69.6 * GB) == 2  # 69.57 GB x 1.15 = 80 GB
    assert gpus_to_hold(LLAMA_70B_BF16) == 3  # 141 GB x 1.15 = 162 GB: two 80 GB GPUs are not enough
    assert gpus_to_hold(LLAMA_70B_BF16, gpu_memory_gb=141) == 2


def test_model_size_from_a_registry_entry_and_a_model_spec():
    from introspect.config import model_specs

    spec = model_specs(PAPER)["llama-3.1-70b"]
    assert ModelSize.of(spec) == ModelSize.of(PAPER["models"]["llama-3.1-70b"], "llama-3.1-70b")
    size = ModelSize.of(spec)
    assert size.weight_bytes() == LLAMA_70B_BF16 and size.train_gpus == 8
    # no n_params: the Llama-style count; float32 models are held in float32
    tiny = ModelSize.of(SMOKE["models"]["tiny-smollm2"], "tiny-smollm2")
    assert tiny.n_params == 13 * 4 * 64 ** 2 + 2 * 128_256 * 64 and tiny.host_bytes == 4 * tiny.n_params


@pytest.mark.parametrize("rule, wildcards, model", [
    ("patching_sweep", {"target": "llama-3.1-8b"}, "llama-3.1-8b"),
    ("hints_run", {"target": "qwen3-8b"}, "qwen3-8b"),
    ("features_activations", {"target": "llama-3.1-8b", "layer": "5"}, "llama-3.1-8b"),
    ("features_similarity", {"target": "llama-3.1-8b", "explainer": "llama-3.1-70b"}, "llama-3.1-70b"),
    ("features_predict", {"target": "llama-3.1-8b", "run": "llama-3.1-70b-random"}, "llama-3.1-70b"),
    ("features_selfie", {"target": "gemma-2-9b"}, "gemma-2-9b"),
])
def test_a_job_that_loads_a_model_holds_its_bf16_weights_on_the_host_and_its_gpus(rule, wildcards, model):
    res = job_resources(rule, PAPER, wildcards, [model], REPO)
    weights = ModelSize.of(PAPER["models"][model], model).weight_bytes("bfloat16")
    assert res.mem_mb * 1e6 >= weights + sizing.PROCESS_BYTES
    assert res.gpu >= 1 and res.gpu * 80 * GB >= 1.15 * weights
    assert res.threads == PAPER["compute"]["threads"]


def test_gpu_memory_gb_decides_how_many_gpus_hold_a_model():
    wildcards = {"target": "llama-3.1-8b", "explainer": "llama-3.1-70b"}
    assert job_resources("features_similarity", PAPER, wildcards, ["llama-3.1-70b"], REPO).gpu == 3
    big = paper(lambda c: c["compute"].update(gpu_memory_gb=141))
    assert job_resources("features_similarity", big, wildcards, ["llama-3.1-70b"], REPO).gpu == 2


def test_a_cuda_job_asks_for_a_gpu_even_when_its_stage_lists_none():
    no_hints = paper(lambda c: c["compute"]["gpus"].pop("hints"))
    assert job_resources("hints_run", no_hints, {"target": "qwen3-8b"}, ["qwen3-8b"], REPO).gpu == 1
    # on auto, a stage without GPUs asks for none (the job falls back to the CPU)
    auto = paper(lambda c: (c["compute"]["gpus"].pop("hints"), c["compute"].update(device="auto")))
    assert job_resources("hints_run", auto, {"target": "qwen3-8b"}, ["qwen3-8b"], REPO).gpu == 0


def test_prediction_runs_on_one_device_not_on_the_training_ranks():
    res = job_resources("patching_predict", PAPER, {"target": "llama-3.1-8b", "explainer": "llama-3.1-8b",
                                                    "variant": "trained"}, ["llama-3.1-8b"], REPO)
    assert PAPER["compute"]["gpus"]["train"] == 4 and res.gpu == 1


def test_the_simulator_is_a_gpu_model_only_when_finetuned():
    simulator = sizing.simulator_size(PAPER["features"]["simulator"])
    assert simulator.n_params == 8_030_261_248
    assert sizing.simulator_size({"backend": "embedding"}) is None and sizing.simulator_size({"backend": "openai"}) is None
    wc = {"target": "llama-3.1-8b", "method": "llama-3.1-8b"}
    scored = job_resources("features_score", PAPER, wc, [simulator], REPO)
    assert scored.gpu == 1 and scored.mem_mb * 1e6 >= simulator.weight_bytes()
    embedding = paper(lambda c: c["features"].update(simulator={"backend": "embedding"}))
    assert job_resources("features_score", embedding, wc, [], REPO).gpu == 0


def test_an_sae_job_asks_for_a_gpu_for_the_sae():
    res = job_resources("features_exemplars", PAPER, {"target": "llama-3.1-8b", "layer": "5"}, [], REPO)
    sae = 2 * 131_072 * 4096 * 4  # LlamaScope LXR-32x: encoder and decoder, float32
    assert res.gpu == 1 and res.mem_mb * 1e6 >= sae + 400_000 * 4096 * 2  # and one layer's fp16 cache


@pytest.mark.parametrize("task, wildcards, explainer", [
    ("features", {"target": "llama-3.1-8b", "run": "llama-3.1-8b"}, "llama-3.1-8b"),
    ("features", {"target": "llama-3.1-8b", "run": "llama-3.1-70b-random"}, "llama-3.1-70b"),
    ("features", {"target": "llama-3.1-8b", "run": "qwen3-8b@n100"}, "qwen3-8b"),
    ("patching", {"target": "qwen3-8b", "explainer": "llama-3.1-8b", "variant": "trained"}, "llama-3.1-8b"),
    ("hints", {"target": "qwen3-8b", "explainer": "qwen3-8b", "variant": "trained"}, "qwen3-8b"),
])
def test_a_training_job_asks_for_its_ranks_and_the_docs_gpu_hours(task, wildcards, explainer):
    res = job_resources(f"{task}_train", PAPER, wildcards, [explainer], REPO)
    gpus = PAPER["models"][explainer].get("train_gpus") or PAPER["compute"]["gpus"]["train"]
    assert res.gpu == gpus and res.threads >= gpus
    sizer = Sizer(PAPER, REPO)
    name = wildcards.get("run", "").partition("@")[0] or f"{wildcards['target']}/{explainer}/{wildcards['variant']}"
    job = sizer.training_job(task, name)
    n = int(wildcards["run"].partition("@n")[2]) if "@n" in wildcards.get("run", "") else None
    rows = sizer.training_rows(job, n)
    hours = memory.gpu_hours(job, memory.shape_of(PAPER["models"][explainer]), rows)
    weights = ModelSize.of(PAPER["models"][explainer], explainer).host_bytes
    # wall time = GPU-hours / GPUs, plus start-up and every rank reading the weights and rank 0 saving them,
    # times the margin, rounded up to 10 minutes, plus the 10 minutes SLURM's SIGTERM comes before the limit
    seconds = sizing.STARTUP_SECONDS + (gpus + 1) * weights / sizing.FILE_BYTES_PER_SECOND + hours * 3600 / gpus
    assert res.runtime == 10 * math.ceil(max(seconds * 1.5 / 60, 10) / 10) + 10
    assert res.runtime - 10 >= 60 * hours / gpus
    # every rank builds the explainer on the host, rank 0 gathers it once more to save
    assert res.mem_mb * 1e6 >= (gpus + 1) * weights
    if n is None and task == "features":
        assert rows == (131_072 - 50) * 31  # every LlamaScope feature of the 31 layers but the held-out ones


def test_a_scaling_point_trains_on_n_features_per_layer():
    sizer = Sizer(PAPER, REPO)
    job = sizer.training_job("features", "llama-3.1-8b")
    assert sizer.training_rows(job, 100) == 100 * 31
    small = job_resources("features_train", PAPER, {"target": "llama-3.1-8b", "run": "llama-3.1-8b@n100"},
                          ["llama-3.1-8b"], REPO)
    full = job_resources("features_train", PAPER, {"target": "llama-3.1-8b", "run": "llama-3.1-8b"},
                         ["llama-3.1-8b"], REPO)
    assert small.runtime < full.runtime and small.gpu == full.gpu and small.mem_mb == full.mem_mb


def test_every_job_has_time_before_the_profiles_sigterm():
    """The SLURM profile signals SIGTERM 10 minutes before the limit (--signal=TERM@600): no job may ask for
    10 minutes or less, or it is signalled at its start."""
    profile = (REPO / "profiles/slurm/config.yaml").read_text()
    assert "--signal=TERM@600" in profile and sizing.SIGTERM_LEAD_MINUTES * 60 == 600
    for rule in sizing.RULES:
        if sizing.RULES[rule].kind in ("local", "tiny"):
            assert job_resources(rule, PAPER, {"target": "llama-3.1-8b"}, [], REPO).runtime >= 20


def test_tables_figures_and_small_downloads_are_local_and_tiny():
    assert {"table1", "table2", "table3", "table4", "table5", "table6", "table7", "figure6", "figure5_7",
            "features_sae_table", "materialise_tokenizer", "patching_pairs", "hints_questions",
            "features_corpus"} == set(sizing.LOCAL_RULES)
    for rule in sizing.LOCAL_RULES:
        res = job_resources(rule, PAPER, {"model": "llama-3.1-8b"}, [], REPO)
        assert res.gpu == 0 and res.threads == 1 and res.mem_mb <= 2000 and res.runtime <= 20, rule
    # the model weights download in a cluster job sized by their bytes, without loading them
    res = job_resources("materialise_model", PAPER, {"model": "llama-3.1-70b"}, ["llama-3.1-70b"], REPO)
    assert res.gpu == 0 and res.mem_mb <= 4000
    assert res.runtime >= LLAMA_70B_BF16 / sizing.DOWNLOAD_BYTES_PER_SECOND / 60


def _rules_in_workflow() -> dict[str, str]:
    """{rule: its block of text} of every rule in rules/*.smk."""
    blocks = {}
    for path in sorted((REPO / "rules").glob("*.smk")):
        text = path.read_text()
        starts = list(re.finditer(r"^\s*rule (\w+):\n", text, re.M))
        for i, match in enumerate(starts):
            end = starts[i + 1].start() if i + 1 < len(starts) else len(text)
            blocks[match.group(1)] = text[match.start():end]
    return blocks


def test_every_rule_is_sized_by_its_own_entry():
    blocks = _rules_in_workflow()
    runs = {rule for rule, block in blocks.items() if "script:" in block or "shell:" in block}
    assert runs == set(sizing.RULES), runs ^ set(sizing.RULES)
    for rule in runs:
        assert f'**sized("{rule}"' in blocks[rule], rule
        threads = re.search(r"threads: (.*)\n", blocks[rule])
        assert threads is None or threads.group(1).startswith(f'sized_threads("{rule}"'), (rule, threads)
        assert (threads is not None) == (sizing.RULES[rule].threaded), rule


def test_the_rule_files_localrules_are_the_local_rules():
    declared = set()
    for path in (REPO / "rules").glob("*.smk"):
        for block in re.findall(r"^\s*localrules:\n((?:\s+\w+,\n)+)", path.read_text(), re.M):
            declared |= set(re.findall(r"(\w+),", block))
    assert declared == set(sizing.LOCAL_RULES)


def test_cpu_configs_keep_their_threads_and_ask_for_no_gpu():
    """The default and smoke configs (no compute.gpus): no GPU anywhere; threads as the rules had them before
    sizing (compute.threads for compute-heavy rules, max(threads, train processes) for training, else 1)."""
    for config in (DEFAULT, SMOKE):
        sizer = Sizer(config, REPO)
        threads = int(config["compute"].get("threads", 1))
        for rule, stage in sizing.RULES.items():
            if stage.kind == "train":
                assert sizer.threads_of(rule, next(iter(sizer.models.values()))) == threads
            else:
                assert sizer.threads_of(rule) == (threads if stage.threaded else 1), rule
        for target in config["patching"]["targets"]:
            res = sizer.job("patching_sweep", {"target": target}, [target])
            assert res.gpu == 0 and res.mem_mb <= 16_000  # fits the CI SLURM node and a laptop


def test_selfie_defaults_match_the_configs():
    from introspect.config import SELFIE_DEFAULTS

    assert sizing.SELFIE_DEFAULTS == SELFIE_DEFAULTS


def test_an_unknown_rule_is_an_error():
    with pytest.raises(KeyError, match="no entry for rule 'features_new'"):
        job_resources("features_new", PAPER, {}, [], REPO)


def test_disk_at_paper_scale_follows_the_data_sizes():
    rows = {what: size for what, _, size in sizing.disk_usage(PAPER, REPO)}
    assert rows["llama-3.1-8b: activation caches"] == 400_000 * 4096 * 2 * 31
    assert rows["llama-3.1-8b: training vectors"] == pytest.approx(33.3e9, rel=0.01)  # ~4M x 4096 fp16
    weights = sum(ModelSize.of(PAPER["models"][m], m).weight_bytes() for m in PAPER["materialise"]["models"])
    assert rows["resources/models (materialised models)"] == weights


def test_stage_dtype_overrides_compute_dtype_for_its_stages_rules_only():
    sizer = Sizer({"compute": {"dtype": "bfloat16", "stage_dtype": {"patching": "float32", "hints": "float32"}}})
    assert sizer.dtype_of("patching_sweep") == "float32" and sizer.dtype_of("hints_run") == "float32"
    # prediction and training run in the stage train; the caches in features
    for rule in ("patching_train", "patching_predict", "hints_predict", "features_activations", "features_train"):
        assert sizer.dtype_of(rule) == "bfloat16", rule
    assert Sizer({"compute": {}}).dtype_of("features_activations") == "auto"


def test_the_default_config_sweeps_and_runs_hints_in_float32():
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    sizer = Sizer(config)
    assert sizer.dtype_of("patching_sweep") == "float32" and sizer.dtype_of("hints_run") == "float32"
    assert sizer.dtype_of("features_train") == config["compute"]["dtype"]
