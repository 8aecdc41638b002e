"""The paper config's SelfIE rows of Table 1: SelfIE run with the base model and with the instruct model (dry runs)."""

from __future__ import annotations

import re

import pytest
import yaml
from conftest import REPO, output_of, run_snakemake, write_config

PAPER = REPO / "configs/paper.yaml"
TARGET = "llama-3.1-8b"


def planned(text: str, rule: str) -> list[dict[str, str]]:
    """The dry run's jobs of `rule`: each job's printed fields (input, output, log, wildcards, ...) as text."""
    jobs = []
    for block in re.split(r"\n(?=rule \w+:\n)", text):
        if block.startswith(f"rule {rule}:\n"):
            fields = dict(re.findall(r"^\s+(\w+): (.*)$", block, re.M))
            jobs.append(fields)
    return jobs


def wildcards(job: dict[str, str]) -> dict[str, str]:
    return dict(pair.split("=", 1) for pair in job["wildcards"].split(", "))


@pytest.fixture(scope="module")
def table1_plan(tmp_path_factory) -> str:
    proc = run_snakemake(tmp_path_factory.mktemp("selfie"), "-n", "results/table1.csv", configfile=PAPER)
    assert proc.returncode == 0, output_of(proc)[-5000:]
    return output_of(proc)


def test_paper_table1_has_selfie_with_the_base_and_the_instruct_model(table1_plan):
    baselines = yaml.safe_load(PAPER.read_text())["features"]["explain"]["baselines"]
    assert "selfie" in baselines and "selfie-llama-3.1-8b-instruct" in baselines
    jobs = {wildcards(job)["selfie"]: job for job in planned(table1_plan, "features_selfie")
            if wildcards(job)["target"] == TARGET}
    assert set(jobs) == {"selfie", "selfie-llama-3.1-8b-instruct"}
    # each reads the target's eval vectors with its own interpreting model
    for method, model in (("selfie", TARGET), ("selfie-llama-3.1-8b-instruct", "llama-3.1-8b-instruct")):
        inputs = jobs[method]["input"].split(", ")
        assert f"results/{TARGET}/features/eval/sae.parquet" in inputs
        assert [p for p in inputs if p.startswith("resources/models/")] == [f"resources/models/{model}"]
        assert jobs[method]["output"].startswith(f"results/{TARGET}/features/predictions/{method}/sae.parquet")
        assert jobs[method]["log"] == f"logs/features_selfie/{TARGET}/{method}.log"
    # both are scored and are rows of Table 1
    scored = {wildcards(job)["method"] for job in planned(table1_plan, "features_score")}
    assert {"selfie", "selfie-llama-3.1-8b-instruct"} <= scored
    (table1,) = planned(table1_plan, "table1")
    for method in ("selfie", "selfie-llama-3.1-8b-instruct"):
        assert f"results/{TARGET}/features/scores/{method}.parquet" in table1["input"].split(", ")


@pytest.mark.parametrize("baseline, message", [
    ("selfie-gemma-2-9b", "'gemma-2-9b' has hidden size 3584, but it must read 'llama-3.1-8b''s vectors of size 4096"),
    ("selfie-no-such-model", "'no-such-model' is not in the model registry"),
])
def test_a_selfie_model_that_cannot_read_the_targets_vectors_stops_the_run(tmp_path, baseline, message):
    def edit(config):
        config["features"]["explain"]["baselines"].append(baseline)

    config = write_config(tmp_path / "config.yaml", PAPER, edit)
    proc = run_snakemake(tmp_path, "-n", "results/table1.csv", configfile=config)
    assert proc.returncode != 0
    text = output_of(proc)
    assert "features.explain.baselines" in text and f"SelfIE baseline {baseline!r}" in text and message in text


def test_a_baseline_name_that_is_not_selfie_of_a_model_is_a_schema_error(tmp_path):
    def edit(config):
        config["features"]["explain"]["baselines"].append("selfie_instruct")

    config = write_config(tmp_path / "config.yaml", PAPER, edit)
    proc = run_snakemake(tmp_path, "-n", "results/table1.csv", configfile=config)
    n = len(yaml.safe_load(PAPER.read_text())["features"]["explain"]["baselines"])
    assert proc.returncode != 0
    assert f"features.explain.baselines.{n}: 'selfie_instruct' is not one of" in output_of(proc)
