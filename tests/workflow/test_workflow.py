"""The workflow end to end on the smoke config: builds, lints, re-runs only what changed, rejects bad configs."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import zipfile

import pytest
import yaml
from conftest import REPO, SMOKE, SNAKEMAKE, offline_env, output_of, run_snakemake, write_config

pytestmark = pytest.mark.slow


def planned_jobs(text: str) -> dict[str, int]:
    """The 'Job stats' table of a dry run as {rule: count} (empty when there is nothing to do)."""
    jobs: dict[str, int] = {}
    match = re.search(r"Job stats:\n.*?\n-+\s+-+\n(.*?)\ntotal\s+\d+", text, re.S)
    if match:
        for line in match.group(1).splitlines():
            rule, count = line.split()
            jobs[rule] = int(count)
    return jobs


def test_smoke_tables_are_built(smoke_run):
    import polars as pl

    table6 = pl.read_csv(smoke_run / "results/table6.csv")
    assert set(table6["target"]) == {"tiny-smollm2", "tiny-gemma3"} and set(table6["split"]) == {"train", "test"}
    assert table6["unchanged"].sum() + table6["changed"].sum() > 100
    table2 = pl.read_csv(smoke_run / "results/table2.csv")
    assert table2.height == 5 and {"exact_mean", "has_changed_f1_mean", "content_mean", "n_invalid"} <= set(table2.columns)
    assert (smoke_run / "results/table2.md").read_text().startswith("# Table 2")
    table7 = pl.read_csv(smoke_run / "results/table7.csv")
    assert table7.select("target", "split").rows() == [("tiny-gemma3", "train"), ("tiny-gemma3", "test"),
                                                      ("tiny-smollm2", "train"), ("tiny-smollm2", "test")]
    assert table7["changed"].sum() + table7["unchanged"].sum() == 80  # 40 questions x 2 targets, nothing dropped
    table3 = pl.read_csv(smoke_run / "results/table3.csv")
    assert table3.height == 4 and table3["group"].to_list() == ["tiny-smollm2"] * 3 + ["tiny-gemma3"]
    assert {"exact_mean", "has_changed_f1_mean", "content_mean", "said_changed", "content_changed"} <= set(table3.columns)


def test_editing_balancing_reruns_balancing_and_downstream_not_the_sweep(smoke_run, tmp_path):
    def edit(config):
        config["patching"]["balance"]["max_per_cell"] = 40

    edited = write_config(tmp_path / "edited.yaml", SMOKE, edit)
    dry = run_snakemake(smoke_run, "-n", configfile=edited)
    assert dry.returncode == 0, output_of(dry)
    jobs = planned_jobs(output_of(dry))
    assert jobs["patching_dataset"] == 2 and jobs["table6"] == 1 and jobs["table2"] == 1
    assert "patching_sweep" not in jobs and "patching_pairs" not in jobs and "materialise_model" not in jobs


def test_speed_settings_and_an_unused_check_prompt_rerun_nothing(smoke_run, tmp_path):
    """Batch sizes of the sweep and hint runs and thread counts change no output (tests/groundtruth: the same
    tables at other batch sizes); the check prompt is used only by GGUF conversions, and the smoke models are
    random: none of these edits re-runs a job."""
    def edit(config):
        config["patching"]["batch_size"] = 5
        config["hints"]["batch_size"] = 3
        config["compute"]["threads"] = 1
        config["materialise"]["check_prompt"] = "Rome is the capital of"

    edited = write_config(tmp_path / "edited.yaml", SMOKE, edit)
    dry = run_snakemake(smoke_run, "-n", configfile=edited)
    assert dry.returncode == 0, output_of(dry)
    assert planned_jobs(output_of(dry)) == {}, output_of(dry)[-3000:]


def test_smoke_feature_ground_truth_is_built(smoke_run):
    import polars as pl

    from introspect.schemas import read_table

    features = smoke_run / "results/tiny-smollm2/features"
    train = read_table(features / "train.parquet", "feature_train")
    test = read_table(features / "eval/sae.parquet", "feature_eval")
    assert test.group_by("layer").len().sort("layer").rows() == [(1, 5), (2, 5)]  # split.n_test per layer
    assert train.height > 100 and not set(train["item_id"]) & set(test["item_id"])
    for name in ("act", "dact"):
        items = read_table(features / f"eval/{name}.parquet", "feature_eval")
        assert items.group_by("layer").len().sort("layer").rows() == [(1, 4), (2, 4)]
        assert all(len(w) == 6 for w in items["windows"])  # n_top + n_random exemplars each
    assert (features / "labels_sample.md").read_text().count("## Layer") == 5
    sae = pl.read_csv(smoke_run / "results/features_sae.csv")
    assert sae.select("target", "layer").rows() == [("tiny-smollm2", 1), ("tiny-smollm2", 2), ("tiny-gemma3", 0),
                                                    ("tiny-gemma3", 1)]  # the second target is Table 4's
    assert (sae["l0"] == 8).all() and (sae["fvu"] < 1).all()
    table5 = pl.read_csv(smoke_run / "results/table5.csv")
    table5 = table5.filter(pl.col("target") == "tiny-smollm2")
    assert table5["explainer"].to_list() == ["tiny-smollm2", "tiny-gemma3"]
    assert table5["dot_product_similarity"][0] == pytest.approx(100, abs=1e-3)  # a model against itself
    assert table5["projection"].to_list() == ["none", "pre-trained"]  # 64 vs 80 hidden: the pre-trained Pi_l


def test_smoke_table1_is_built(smoke_run):
    import polars as pl

    table1 = pl.read_csv(smoke_run / "results/table1.csv")
    assert table1["row"].to_list() == ["self-full", "self-lora", "other-random", "other-pretrained", "NN-all",
                                       "NN-layer", "SelfIE best of 2 (tiny-smollm2, untrained)", "gold SAE labels"]
    assert {f"{m}_mean" for m in ("sae_judge", "sae_simulator", "act_simulator", "dact_simulator")} <= set(table1.columns)
    gold = table1.row(7, named=True)
    assert gold["sae_judge_mean"] == 100 and gold["act_simulator_mean"] is None  # gold labels: SAE only
    n_items = pl.read_parquet(smoke_run / "results/tiny-smollm2/features/eval/sae.parquet").height
    assert gold["sae_exact"] == n_items  # the gold labels are the labels
    assert table1["sae_distinct"][6] is None and all(n >= 1 for n in table1["sae_distinct"][:6])  # SelfIE: none
    text = (smoke_run / "results/table1.md").read_text()
    assert "embedding backend" in text and "| gold SAE labels | **100.0 ± 0.0** |" in text
    projection = json.loads((smoke_run / "results/tiny-smollm2/features/projections/depth/tiny-gemma3.json").read_text())
    assert set(projection) == {"1", "2"} and all("r2" in v for v in projection.values())
    aligned = json.loads((smoke_run / "results/tiny-smollm2/features/projections/input/tiny-smollm2.json").read_text())
    assert {v["explainer_layer"] for v in aligned.values()} == {-1}  # self-lora: onto the input embedding
    selfie = pl.read_parquet(smoke_run / "results/tiny-smollm2/features/predictions/selfie/sae.parquet")
    assert selfie["candidate"].unique(maintain_order=True).to_list() == ["1v", "10v"]


def test_smoke_table4_and_figures_are_built(smoke_run):
    import polars as pl

    table4 = pl.read_csv(smoke_run / "results/table4.csv")
    assert table4["row"].to_list() == ["t4-self", "t4-other", "NN-all", "NN-layer",
                                       "SelfIE best of 2 (tiny-gemma3, untrained)"]
    assert "sae_judge_mean" in table4.columns and "act_simulator_mean" not in table4.columns
    for figure in ("figure5.png", "figure6.png", "figure7.png"):
        assert (smoke_run / "results" / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    curves = pl.read_csv(smoke_run / "results/figure5_7.csv")
    scaled = curves.filter(pl.col("n_train").is_not_null())
    assert set(scaled["method"]) == {"self-full", "other-random", "nn_layer"} and set(scaled["n_train"]) == {4, 12}
    assert curves.filter(pl.col("n_train").is_null())["method"].unique().to_list() == ["selfie"]
    log = (smoke_run / "logs/features_train/tiny-smollm2/self-full@n4.log").read_text()
    assert "4 training features per layer (8 in all)" in log
    points = pl.read_csv(smoke_run / "results/figure6.csv")
    assert set(points["run"]) == {"self-full", "self-lora", "other-random", "other-pretrained"}
    # each run through its own Pi_l: the two runs of tiny-gemma3 have their own x (issue 18.4)
    per_run = points.unique("run").sort("run")
    x = dict(zip(per_run["run"], per_run["dot_product_similarity"]))
    assert x["other-random"] != x["other-pretrained"]
    assert x["self-full"] == pytest.approx(100, abs=1e-3)  # the target itself, no projection
    assert set(per_run["projection"]) == {"none", "the run's trained Pi_l (random init)",
                                          "the run's trained Pi_l (pretrained init)"}


def test_editing_label_settings_reruns_labels_not_activations_or_saes(smoke_run, tmp_path):
    def edit(config):
        config["features"]["labels"]["concepts"] = False

    edited = write_config(tmp_path / "edited.yaml", SMOKE, edit)
    dry = run_snakemake(smoke_run, "-n", configfile=edited)
    assert dry.returncode == 0, output_of(dry)
    jobs = planned_jobs(output_of(dry))
    # both features targets (Table 1's and Table 4's): 2 layers each
    assert jobs["features_labels"] == 4 and jobs["features_split"] == 2 and jobs["features_sae_table"] == 1
    assert not {"features_corpus", "features_tokens", "features_activations", "features_sae",
                "features_exemplars", "features_eval_act", "features_eval_dact"} & set(jobs)


def test_a_run_seed_retrains_that_run_only(smoke_run, tmp_path):
    def edit(config):
        config["features"]["explain"]["runs"]["self-full"]["seed"] = 1

    edited = write_config(tmp_path / "edited.yaml", SMOKE, edit)
    dry = run_snakemake(smoke_run, "-n", configfile=edited)
    assert dry.returncode == 0, output_of(dry)
    jobs = planned_jobs(output_of(dry))
    # self-full (Table 1) and its scaling points self-full@n4, @n12; their predictions and scores; the tables
    assert jobs["features_train"] == jobs["features_predict"] == 3, jobs
    assert "output: results/tiny-smollm2/features/explainers/self-full" in output_of(dry)
    # the tables read every checkpoint's explainer.json (n_train, recipe), but only self-full is retrained
    assert "output: results/tiny-smollm2/features/explainers/self-lora" not in output_of(dry)
    assert "features_baseline" not in jobs
    assert "Params have changed" in output_of(dry)


def test_smoke_targets_are_built(smoke_run):
    for name, layers, hidden, arch in [("tiny-smollm2", 4, 64, "llama"), ("tiny-gemma3", 2, 80, "gemma3_text")]:
        info = json.loads((smoke_run / "resources/models" / name / "introspect.json").read_text())
        assert (info["n_layers"], info["hidden_size"], info["architecture"]) == (layers, hidden, arch)
        assert info["has_chat_template"]
        assert (smoke_run / "resources/models" / name / "model.safetensors").stat().st_size > 1e6
        assert "job finished" in (smoke_run / f"logs/materialise_model/{name}.log").read_text()
        assert (smoke_run / f"benchmarks/materialise_model/{name}.tsv").exists()


def test_up_to_date_workflow_has_nothing_to_do(smoke_run):
    proc = run_snakemake(smoke_run, "-n")
    assert proc.returncode == 0, output_of(proc)
    assert planned_jobs(output_of(proc)) == {}
    assert "Nothing to be done" in output_of(proc)


REPORTED = ["table1", "table2", "table3", "table4", "table5", "table6", "table7", "features_sae", "figure5", "figure6",
            "figure7"]


def test_report_holds_every_table_and_figure_with_its_caption(smoke_run):
    report = smoke_run / "report.zip"
    proc = run_snakemake(smoke_run, "--report", str(report))
    assert proc.returncode == 0, output_of(proc)[-3000:]
    with zipfile.ZipFile(report) as archive:
        names = archive.namelist()
        text = "\n".join(archive.read(n).decode("utf-8", "replace") for n in names
                         if n.endswith((".html", ".js", ".json")))
    for name in REPORTED:
        kind = "png" if name.startswith("figure") else "html"
        assert any(n.endswith(f"/{name}.{kind}") for n in names), f"{name}.{kind} is not in the report"
        caption = (REPO / "report" / f"{name}.rst").read_text().split()[:6]
        assert " ".join(caption).replace("**", "") in text.replace("<strong>", "").replace("</strong>", ""), name
    table = next(n for n in names if n.endswith("/table2.html"))
    with zipfile.ZipFile(report) as archive:
        page = archive.read(table).decode()
    assert "<table>" in page and "Table 2" in page  # shown as a table, not a file link
    for category in ("Feature descriptions", "Activation patching", "Input ablation"):
        assert category in text


def test_editing_library_code_reruns_only_the_jobs_that_import_it(smoke_run, tmp_path):
    copy = tmp_path / "repo"
    copy.mkdir()
    for name in ("Snakefile", "config.yaml", "rules", "workflow_scripts", "lib", "schemas", "report", "profiles"):
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, copy / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy(source, copy / name)

    def dry_run() -> dict[str, int]:
        cmd = [str(SNAKEMAKE), "-s", str(copy / "Snakefile"), "--directory", str(smoke_run), "--configfile",
               str(SMOKE), "--cores", "1", "-n", "--rerun-triggers", "params"]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=offline_env())
        assert proc.returncode == 0, output_of(proc)[-3000:]
        jobs = planned_jobs(output_of(proc))
        jobs.pop("all", None)  # the target rule itself
        return jobs

    assert dry_run() == {}  # the same code in another folder: nothing to do
    figures = copy / "lib/introspect/reporting/figures.py"
    figures.write_text(figures.read_text() + "\n# an edit\n")
    assert dry_run() == {"figure5_7": 1, "figure6": 1}
    balance = copy / "lib/introspect/groundtruth/balance.py"
    balance.write_text(balance.read_text() + "\n# an edit\n")
    jobs = dry_run()
    assert jobs["patching_dataset"] == 2 and jobs["hints_dataset"] == 2
    assert not {"patching_sweep", "hints_run", "features_sae", "materialise_model"} & set(jobs)


def test_two_training_processes_build_tables_1_to_3(smoke_run, tmp_path):
    # the smoke run's ground truth, copied; every training job again on 2 gloo ranks, then the tables
    import polars as pl

    work = tmp_path / "two-ranks"
    shutil.copytree(smoke_run, work, symlinks=True)
    edited = write_config(tmp_path / "two.yaml", SMOKE, lambda c: c["compute"].update(processes={"train": 2}))
    tables = ["results/table1.csv", "results/table2.csv", "results/table3.csv"]
    started = time.time()
    proc = run_snakemake(work, *tables, "--forcerun", "features_train", "patching_train", "hints_train",
                         configfile=edited, timeout=1800)
    assert proc.returncode == 0, output_of(proc)[-5000:]
    jobs = planned_jobs(output_of(proc))
    assert jobs["features_train"] >= 3 and jobs["patching_train"] >= 1 and jobs["hints_train"] >= 1
    logs = [log for rule in ("features_train", "patching_train", "hints_train")
            for log in (work / "logs" / rule).rglob("*.log") if log.stat().st_mtime >= started]
    assert len(logs) == jobs["features_train"] + jobs["patching_train"] + jobs["hints_train"]
    for log in logs:  # the jobs this run made (the scaling points of Figures 5 and 7 were not needed)
        assert "world size 2" in log.read_text(), log
    for table in tables:
        assert pl.read_csv(work / table).height > 0
    assert not list(work.glob("results/**/*.resume"))


# Runs after the tests above (file order): it leaves tiny-gemma3's downstream outputs out of date.
def test_editing_one_model_reruns_only_that_model(smoke_run, tmp_path):
    def edit(config):
        config["models"]["tiny-gemma3"]["seed"] = 2

    edited = write_config(tmp_path / "edited.yaml", SMOKE, edit)
    dry = run_snakemake(smoke_run, "-n", configfile=edited)
    assert dry.returncode == 0, output_of(dry)
    jobs = planned_jobs(output_of(dry))
    # the edited model and what reads it (its own sweep, its explainer runs, the tables); nothing else
    assert jobs["materialise_model"] == 1 and "materialise_tokenizer" not in jobs
    assert jobs["patching_sweep"] == 1 and "patching_pairs" not in jobs
    assert "output: resources/models/tiny-gemma3" in output_of(dry)
    assert "output: resources/models/tiny-smollm2" not in output_of(dry)
    assert "Params have changed" in output_of(dry)

    untouched = smoke_run / "resources/models/tiny-smollm2/model.safetensors"
    before = (untouched.stat().st_mtime_ns, (smoke_run / "resources/models/tiny-gemma3/model.safetensors").read_bytes())
    proc = run_snakemake(smoke_run, "resources/models/tiny-gemma3", configfile=edited)
    assert proc.returncode == 0, output_of(proc)
    assert untouched.stat().st_mtime_ns == before[0]
    assert (smoke_run / "resources/models/tiny-gemma3/model.safetensors").read_bytes() != before[1]

    # and back: the original config rebuilds that model again and leaves the other alone
    dry = run_snakemake(smoke_run, "-n", "resources/models/tiny-gemma3", "resources/models/tiny-smollm2")
    assert planned_jobs(output_of(dry)) == {"materialise_model": 1}
    assert run_snakemake(smoke_run, "resources/models/tiny-gemma3").returncode == 0


@pytest.mark.parametrize("config", ["config.yaml", "configs/smoke.yaml", "configs/paper.yaml"])
def test_lint_is_clean(tmp_path, config):
    proc = run_snakemake(tmp_path, "--lint", configfile=REPO / config)
    assert proc.returncode == 0, output_of(proc)
    assert "Congratulations, your workflow is in a good condition!" in output_of(proc)
    assert "Lints for" not in output_of(proc)


@pytest.mark.parametrize("config", ["config.yaml", "configs/smoke.yaml", "configs/paper.yaml"])
def test_dag_resolves_offline(config, tmp_path):
    """Every shipped config's DAG resolves with no network (HF_HUB_OFFLINE is set by run_snakemake)."""
    proc = run_snakemake(tmp_path, "-n", configfile=REPO / config)
    assert proc.returncode == 0, output_of(proc)
    jobs = planned_jobs(output_of(proc))
    # the paper config: Llama-3.1-8B(-Instruct), Llama-3-8B, Qwen3-8B, Llama-3.1-70B, Gemma-2-9B(-it) (Tables 1-7)
    assert jobs["materialise_model"] == (7 if config.endswith("paper.yaml") else 2)
    assert all(jobs[f"table{n}"] == 1 for n in range(1, 8))
    assert jobs["figure6"] == jobs["figure5_7"] == 1


def test_experiment_overlay_adds_a_table1_run(tmp_path):
    """configs/experiments/*.yaml are overlays on config.yaml (both given to --configfile, merged in order)."""
    overlay = REPO / "configs/experiments/table1-gemma3-aligned.yaml"
    proc = run_snakemake(tmp_path, "--configfile", str(REPO / "config.yaml"), str(overlay), "-n", "--",
                         "results/smollm2-135m/features/scores/gemma3-aligned.parquet", configfile=None)
    assert proc.returncode == 0, output_of(proc)
    assert "results/smollm2-135m/features/projections/input/gemma3-270m.safetensors" in output_of(proc)
    assert planned_jobs(output_of(proc))["features_train"] == 1


def test_paper_config_plans_hub_downloads_without_gpus(tmp_path):
    proc = run_snakemake(tmp_path, "-n", "resources/models/llama-3.1-70b", configfile=REPO / "configs/paper.yaml")
    assert proc.returncode == 0, output_of(proc)
    assert planned_jobs(output_of(proc)) == {"materialise_tokenizer": 1, "materialise_model": 1}
    assert "gpu=0" in output_of(proc)


def test_paper_training_jobs_ask_for_the_gpus_they_launch_ranks_on(tmp_path):
    from introspect.explainers.memory import training_jobs

    paper = yaml.safe_load((REPO / "configs/paper.yaml").read_text())
    wanted = {j.name: j.gpus for j in training_jobs(paper, REPO) if j.task == "features"}
    targets = [f"results/llama-3.1-8b/features/explainers/{run}" for run in paper["features"]["explain"]["runs"]]
    proc = run_snakemake(tmp_path, "-n", *targets, configfile=REPO / "configs/paper.yaml")
    assert proc.returncode == 0, output_of(proc)[-3000:]
    planned = re.findall(r"rule features_train:\n(?:.*\n)*?\s+wildcards: target=llama-3.1-8b, run=([^\n]+)\n"
                         r"(?:\s+threads: \d+\n)?\s+resources: ([^\n]+)", output_of(proc))
    assert {run for run, _ in planned} == set(paper["features"]["explain"]["runs"])
    for run, resources in planned:
        assert f"gpu={wanted[run]}" in resources, (run, resources)
    assert wanted["llama-3.1-70b-random"] == 8 and wanted["llama-3.1-8b"] == 4


def test_bad_config_stops_before_any_job(tmp_path):
    def edit(config):
        config["models"]["tiny-gemma3"]["n_layers"] = "two"
        config["compute"]["device"] = "tpu"

    bad = write_config(tmp_path / "bad.yaml", SMOKE, edit)
    proc = run_snakemake(tmp_path, configfile=bad)
    text = output_of(proc)
    assert proc.returncode != 0
    assert "models.tiny-gemma3.n_layers: 'two' is not of type integer" in text
    assert "compute.device: 'tpu' is not one of ['auto', 'cpu', 'cuda']" in text
    assert "Job stats" not in text and not (tmp_path / "resources").exists()
