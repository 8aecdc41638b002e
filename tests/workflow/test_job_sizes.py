"""Every planned job of the paper config's dry run, through the SLURM profile, asks for what it needs.

The jobs and their resources come from Snakemake itself (tools/job_sizes.py records each job where Snakemake
logs it in a dry run: the rule's sized resources after the profile's default- and set-resources), so these
tests check what sbatch would get. Which models a rule's script loads is written out here, from the scripts,
independently of introspect.sizing.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import sys
from collections import Counter

import pytest
import yaml
from conftest import REPO

from introspect.explainers import memory
from introspect.names import split_scaled

PAPER_FILE = REPO / "configs/paper.yaml"
PAPER = yaml.safe_load(PAPER_FILE.read_text())
GPU_GB = PAPER["compute"].get("gpu_memory_gb", 80)
SIMULATOR_BF16 = 8_030_261_248 * 2  # Transluce's finetuned simulator: a Llama-3.1-8B


def _tool():
    spec = importlib.util.spec_from_file_location("job_sizes", REPO / "tools/job_sizes.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["job_sizes"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


job_sizes = _tool()


def feature_run(name: str) -> dict:
    explain = PAPER["features"]["explain"]
    base, _ = split_scaled(name)
    for table in (explain, explain.get("table4", {})):
        if base in table.get("runs", {}):
            return table["runs"][base]
    raise KeyError(name)


def bf16(name: str) -> float:
    return PAPER["models"][name]["n_params"] * 2


# What each rule's script puts on compute.device (workflow_scripts/*.py): {rule: wildcards -> bytes in bf16}
ON_DEVICE = {
    "patching_sweep": lambda wc: bf16(wc["target"]),
    "hints_run": lambda wc: bf16(wc["target"]),
    "features_activations": lambda wc: bf16(wc["target"]),
    "features_eval_dact": lambda wc: bf16(wc["target"]),
    "features_selfie": lambda wc: bf16(wc["target"]),
    "features_similarity": lambda wc: bf16(wc["explainer"]),
    "features_run_similarity": lambda wc: bf16(feature_run(wc["run"])["explainer"]),
    "features_projection": lambda wc: bf16(wc["explainer"]),
    "patching_predict": lambda wc: bf16(wc["explainer"]),
    "hints_predict": lambda wc: bf16(wc["explainer"]),
    "features_predict": lambda wc: bf16(feature_run(wc["run"])["explainer"]),
    "features_labels": lambda wc: SIMULATOR_BF16,  # the finetuned simulator scores labels
    "features_score": lambda wc: SIMULATOR_BF16,
    "features_sae": lambda wc: 2 * 131_072 * PAPER["models"][wc["target"]]["hidden_size"] * 4,  # the SAE
    "features_exemplars": lambda wc: 2 * 131_072 * PAPER["models"][wc["target"]]["hidden_size"] * 4,
}
TRAINING = {"patching_train": "explainer", "hints_train": "explainer", "features_train": "run"}
LOCAL = {"table1", "table2", "table3", "table4", "table5", "table6", "table7", "figure6", "figure5_7",
         "features_sae_table", "materialise_tokenizer", "patching_pairs", "hints_questions", "features_corpus"}


@pytest.fixture(scope="module")
def paper_jobs():
    return job_sizes.plan(PAPER_FILE)


def test_the_plan_is_the_whole_paper_workflow(paper_jobs):
    counts = Counter(job.rule for job in paper_jobs)
    assert counts["materialise_model"] == 7 and counts["features_train"] == 18
    assert all(counts[f"table{n}"] == 1 for n in range(1, 8))
    for job in paper_jobs:
        assert {"mem_mb", "runtime", "gpu"} <= set(job.resources), job


def test_a_job_that_loads_a_model_holds_it_on_the_host_and_on_enough_gpus(paper_jobs):
    checked = set()
    for job in paper_jobs:
        if job.rule in ON_DEVICE:
            need = ON_DEVICE[job.rule](job.wildcards)
            assert job.mem_mb * 1e6 >= need, (job.rule, job.wildcards, job.mem_mb)
            assert job.gpu >= 1 and job.gpu * GPU_GB * 1e9 >= 1.15 * need, (job.rule, job.wildcards, job.gpu)
            assert job.threads == PAPER["compute"]["threads"]
            checked.add(job.rule)
    assert checked == set(ON_DEVICE)


def test_jobs_that_use_no_device_ask_for_no_gpu(paper_jobs):
    for job in paper_jobs:
        if job.rule not in ON_DEVICE and job.rule not in TRAINING:
            assert job.gpu == 0, (job.rule, job.wildcards)


def test_training_jobs_ask_for_the_ranks_they_launch_and_the_docs_runtime(paper_jobs):
    from introspect.sizing import Sizer

    sizer = Sizer(PAPER, REPO)
    seen = Counter()
    for job in paper_jobs:
        if job.rule not in TRAINING:
            continue
        wc = job.wildcards
        if job.rule == "features_train":
            explainer = feature_run(wc["run"])["explainer"]
            base, n = split_scaled(wc["run"])
            training = sizer.training_job("features", base)
        else:
            explainer, n = wc["explainer"], None
            training = sizer.training_job(job.rule.removesuffix("_train"),
                                          f"{wc['target']}/{wc['explainer']}/{wc['variant']}")
        ranks = PAPER["models"][explainer].get("train_gpus") or PAPER["compute"]["gpus"]["train"]
        assert job.gpu == ranks == training.gpus, (job.rule, wc, job.gpu)
        assert job.threads >= ranks
        # the GPU-hours of docs/cluster.md's training table (memory.gpu_hours), spread over the ranks
        hours = memory.gpu_hours(training, memory.shape_of(PAPER["models"][explainer]), sizer.training_rows(training, n))
        assert job.runtime - 10 >= 60 * hours / ranks, (job.rule, wc, job.runtime, hours)  # 10: SIGTERM lead
        assert job.runtime == sizer.training(training, sizer.models[explainer], sizer.training_rows(training, n)).runtime
        # one bf16 copy of the explainer per rank on the host, and one more for the save
        assert job.mem_mb * 1e6 >= (ranks + 1) * bf16(explainer)
        seen[explainer] += 1
    assert seen["llama-3.1-70b"] == 2  # the two 70B runs, on 8 ranks


def test_tables_figures_and_downloads_run_locally(paper_jobs):
    local = {job.rule for job in paper_jobs if job.local}
    assert local == LOCAL
    for job in paper_jobs:
        if job.local:
            assert job.gpu == 0 and job.threads == 1


def test_the_docs_tables_are_the_tools_output(paper_jobs):
    """docs/cluster.md shows the sizes the workflow asks for: regenerate them with the commands it names."""
    doc = (REPO / "docs/cluster.md").read_text()
    table = job_sizes.rule_table(paper_jobs)
    assert table in doc, "docs/cluster.md: rerun `.venv/bin/python tools/job_sizes.py configs/paper.yaml`\n" + table
    assert job_sizes.disk_table(PAPER) in doc
    # the training table's job runtimes are the dry run's
    for job in paper_jobs:
        if job.rule in TRAINING and "@" not in job.wildcards.get("run", ""):
            name = job.wildcards.get("run") or f"{job.wildcards['target']}/{job.wildcards['explainer']}/{job.wildcards['variant']}"
            task = job.rule.removesuffix("_train")
            row = re.search(rf"^\| {task} \| {re.escape(name)} \|.*\| ([\d.,]+) h \|$", doc, re.M)
            assert row and float(row.group(1).replace(",", "")) == round(job.runtime / 60, 1), (name, job.runtime)


def test_the_profile_overrides_a_rules_sizes(tmp_path):
    profile = tmp_path / "slurm"
    shutil.copytree(REPO / "profiles/slurm", profile)
    config = profile / "config.yaml"
    config.write_text(config.read_text() + "\nset-resources:\n  features_train: {runtime: 2880}\n"
                      "  features_predict: {mem_mb: 500000}\n")
    target = "results/llama-3.1-8b/features/predictions/llama-3.1-8b/sae.parquet"
    jobs = job_sizes.plan(PAPER_FILE, [target], profile=profile)
    by_rule = {job.rule: job for job in jobs}
    assert by_rule["features_train"].runtime == 2880 and by_rule["features_train"].gpu == 4
    assert by_rule["features_predict"].mem_mb == 500000
    assert by_rule["features_train"].mem_mb == 95000  # the rest stays as sized


def test_cpu_configs_ask_for_no_gpu_and_are_never_held_back_locally():
    """config.yaml and the smoke config: no GPU, threads as compute.threads. Locally mem_mb and runtime only
    schedule: the workflow profile sets no `resources:` limit, so no job waits for (or is refused) memory. The
    smoke config's jobs fit the CI SLURM node (tools/ci-slurm.sh offers at least 16,000 MB)."""
    assert "resources" not in yaml.safe_load((REPO / "profiles/default/config.yaml").read_text())
    default = yaml.safe_load((REPO / "config.yaml").read_text())
    jobs = job_sizes.plan(REPO / "config.yaml", profile=None)
    assert jobs and all(job.gpu == 0 for job in jobs)
    assert min(job.runtime for job in jobs) > 10  # SIGTERM comes 10 minutes before the limit on SLURM
    assert max(job.threads for job in jobs) == default["compute"]["threads"]
    smoke = job_sizes.plan(REPO / "configs/smoke.yaml", profile=REPO / "profiles/slurm")
    assert all(job.gpu == 0 and job.threads == 1 for job in smoke)
    assert max(job.mem_mb for job in smoke) <= 16_000
