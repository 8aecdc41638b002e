# Helpers shared by the workflow: registry look-ups, paths, resources.

import dataclasses

from introspect.config import model_specs
from introspect.config import SELFIE_DEFAULTS
from introspect.explainers.model import resolve_projection
from introspect.provenance import code_hash
from introspect.names import scaled_name, split_scaled
from introspect.sizing import Sizer, simulator_size

MODELS = model_specs(config)
SIZER = Sizer(config, root=workflow.basedir)


def logits_check(model, key):
    """materialise.<key> (check_prompt, logits_atol) for a model whose conversion is checked against its GGUF
    (gguf_wheel), else None: editing the check re-runs only the models it checks."""
    return config["materialise"][key] if MODELS[model].source == "gguf_wheel" else None


def forward_batch(task):
    """<task>.batch_size, the prompts per forward pass of a sweep or hint run, as a resource, not a param: in
    float32 it changes the speed, not the outputs (the same tables: tests/groundtruth), so editing it re-runs
    nothing. In bfloat16 another batch shape can flip a near-tied answer: delete the outputs to re-run them.
    The job reads it from `snakemake.resources.forward_batch`."""
    return int(config[task]["batch_size"])


def model_spec(name):
    """The registry fields that shape a materialised model, as params (editing them re-runs its jobs)."""
    spec = MODELS[name].to_dict()
    spec.pop("instruct")  # how the model is prompted, not how it is built
    for key in ("train_gpus", "n_params", "vocab_size"):  # how jobs that use it are sized
        spec.pop(key)
    return spec


def tokenizer_spec(name):
    """The registry fields that determine a model's tokenizer, as a plain dict (params)."""
    return dataclasses.asdict(MODELS[name].tokenizer_spec())


def model_dir(name):
    return f"resources/models/{name}"


def tokenizer_dir(name):
    """Folder of the tokenizer a model uses (a random model borrows a real model's)."""
    return f"resources/tokenizers/{MODELS[name].tokenizer_model}"


def materialised_models():
    return [model_dir(name) for name in config["materialise"]["models"]]


def paper_targets():
    """The tables and figures the active config defines (rule all)."""
    targets = []
    if config.get("patching"):
        targets += ["results/table6.csv"]
        if config["patching"].get("explain"):
            targets += ["results/table2.csv"]
    if config.get("features"):
        targets += ["results/features_sae.csv", "results/table5.csv"]
        if config["features"].get("explain"):
            targets += ["results/table1.csv", "results/figure6.png"]
            targets += ["results/table4.csv"] if "table4" in feature_tables() else []
            targets += ["results/figure5.png", "results/figure7.png"] if scaling() else []
        targets += expand("results/{target}/features/{name}", target=feature_targets(),
                          name=["train.parquet", "eval/sae.parquet", "eval/act.parquet", "eval/dact.parquet"])
    if config.get("hints"):
        targets += ["results/table7.csv"]
        if config["hints"].get("explain"):
            targets += ["results/table3.csv"]
    return targets or materialised_models()


def sized_job(rule, wildcards, models=None):
    """introspect.sizing's Resources of one job of `rule`; `models(wildcards)` (or a list) names the models it
    loads: registry names, or what simulator_models() gives."""
    loaded = models(wildcards) if callable(models) else (models or [])
    return SIZER.job(rule, dict(wildcards.items()), loaded)


def sized(rule, models=None):
    """A rule's resources from the sizing arithmetic, for `resources: **sized(...)`: mem_mb, runtime (minutes)
    and gpu, each a function of the job's wildcards. The SLURM profile's set-resources overrides them."""

    def resource(name):
        return lambda wildcards: getattr(sized_job(rule, wildcards, models), name)

    return {name: resource(name) for name in ("mem_mb", "runtime", "gpu")}


def sized_threads(rule, explainer=None):
    """A rule's threads (SLURM cpus-per-task) from the same arithmetic: compute.threads for a compute-heavy job,
    1 for the others; a training job's (at least one per rank it launches) from `explainer(wildcards)`."""
    if explainer is None:
        return SIZER.threads_of(rule)
    return lambda wildcards: SIZER.threads_of(rule, SIZER.models[explainer(wildcards)])


def simulator_models():
    """The model features.simulator loads on compute.device (the finetuned simulator), as a list for sized()."""
    size = simulator_size(config["features"]["simulator"])
    return [size] if size else []


def train_processes():
    """CPU ranks of a training job (compute.processes.train; 1 when not set). On CUDA a job runs one rank per
    GPU it asks for (compute.gpus.train) instead."""
    return int(config["compute"].get("processes", {}).get("train", 1))


def deepspeed_config_text(train):
    """The DeepSpeed JSON a train section names, as a param: editing the file re-runs its trainings."""
    path = train.get("deepspeed_config") if train.get("engine") == "deepspeed" else None
    return (Path(workflow.basedir) / path).read_text() if path else None


def compute_dtype(rule):
    """The precision of `rule`'s model computations (auto | float32 | bfloat16): compute.stage_dtype.<stage>
    where set for the rule's stage (the stages of compute.gpus), else compute.dtype (auto when not set)."""
    return SIZER.dtype_of(rule)


def memory_budget_mb():
    """MB a streaming data stage reads at a time (compute.memory_budget_mb; 1024 when not set)."""
    return int(config["compute"].get("memory_budget_mb", 1024))


def checkpoint_every():
    """Optimiser steps between a training job's checkpoints (compute.checkpoint_every; 0: only on SIGTERM)."""
    return int(config["compute"].get("checkpoint_every", 0))


def patching_targets():
    return list(config.get("patching", {}).get("targets", {}))


def patching_target(name):
    return config["patching"]["targets"][name]


def patching_chunks(name):
    """The layer blocks of a target: explicit `chunks`, else n_chunks equal contiguous blocks."""
    from introspect.groundtruth.patching import layer_chunks

    entry = patching_target(name)
    if "chunks" in entry:
        return [list(chunk) for chunk in entry["chunks"]]
    return [list(c) for c in layer_chunks(MODELS[name].n_layers, config["patching"]["n_chunks"])]


def explain_rows(task):
    """(target, explainer, variant) rows of a task's explanation table."""
    return [(r["target"], r["explainer"], r["variant"]) for r in config[task]["explain"]["rows"]]


def trained_rows(task):
    return [row for row in explain_rows(task) if row[2] != "untrained"]


def explainer_projection(target, explainer, projection):
    """auto: no projection when hidden sizes match, else a random Pi_l (the paper's default)."""
    return resolve_projection(projection, MODELS[target].hidden_size, MODELS[explainer].hidden_size)


def hint_targets():
    return list(config.get("hints", {}).get("targets", {}))


def explainer_input(task, wc):
    """A trained checkpoint, or the explainer's own model folder for the untrained baseline."""
    if wc.variant == "untrained":
        return model_dir(wc.explainer)
    return f"results/{task}/{wc.target}/explainers/{wc.explainer}/{wc.variant}"


def explainer_chat(name):
    """The hint task's explainer reads a system + user conversation: chat format when the model has one."""
    return bool(MODELS[name].instruct or MODELS[name].chat_template)


def feature_targets():
    return list(config.get("features", {}).get("targets", {}))


def feature_layers(target):
    return list(config["features"]["targets"][target]["layers"])


def feature_setting(target, key):
    """A per-target override (features.targets.<t>.sae / .labels) or the section's default."""
    return config["features"]["targets"][target].get(key, config["features"][key])


def similarity_pairs():
    """(target, explainer) pairs of Table 5."""
    return [(t, e) for t in feature_targets() for e in config["features"]["similarity"]["explainers"]]


def similarity_projection_input(target, explainer):
    """{"projection": the pre-trained (depth) Pi_l file} when the explainer's hidden size differs from the
    target's (Table 5 compares through it, as the paper's Llama-3.1-70B row), else {}."""
    if MODELS[target].hidden_size == MODELS[explainer].hidden_size:
        return {}
    return {"projection": f"results/{target}/features/projections/depth/{explainer}.safetensors"}


def feature_explain():
    return config.get("features", {}).get("explain", {})


def feature_tables():
    """The feature-description tables the config defines: {"table1": section, "table4": section}; each has a
    target, runs and baselines (Table 4 shares the train/eval/judge settings of features.explain)."""
    explain = feature_explain()
    tables = {"table1": explain} if explain else {}
    if explain.get("table4"):
        tables["table4"] = explain["table4"]
    return tables


def scaling():
    """features.explain.scaling (Figures 5 and 7), or {} when the config draws no scaling curves."""
    return feature_explain().get("scaling", {})


def feature_runs():
    """Every explainer run name: Table 1's and Table 4's runs, and the scaling runs (`run@nN`)."""
    names = [name for table in feature_tables().values() for name in table["runs"]]
    return names + [scaled_name(run, n) for run in scaling().get("runs", []) for n in scaling()["n_train"]]


def feature_run(name):
    """A run's settings (a scaling run `run@nN` has its base run's)."""
    base, _ = split_scaled(name)
    for table in feature_tables().values():
        if base in table["runs"]:
            return table["runs"][base]
    raise KeyError(f"no feature explainer run {base!r} in the config")


def feature_run_target(name):
    base, _ = split_scaled(name)
    return next(t["target"] for t in feature_tables().values() if base in t["runs"])


def feature_run_train(name):
    """The shared train settings with the run's overrides; a scaling run trains on its whole per-layer
    sample (no max_train)."""
    train = {**config["features"]["explain"]["train"], **feature_run(name).get("train", {})}
    if split_scaled(name)[1] is not None:
        train.pop("max_train", None)
    return train


def feature_chat(name):
    """Whether a run's prompts go through its explainer's chat template (features.explain.chat; auto = when
    the explainer is an instruct model)."""
    chat = feature_explain().get("chat", "auto")
    return MODELS[feature_run(name)["explainer"]].instruct if chat == "auto" else bool(chat)


def feature_run_projection(name):
    run = feature_run(name)
    return explainer_projection(feature_run_target(name), run["explainer"], run.get("projection", "auto"))


def table_methods(table):
    """A feature table's rows: its runs, then its baselines."""
    section = feature_tables()[table]
    return list(section["runs"]) + list(section.get("baselines", []))


def table_inputs(table):
    """A feature table's inputs: each method's per-item scores, its held-out SAE descriptions (for the table's
    distinct-answer and exact-label columns) and the held-out SAE items."""
    target, methods = feature_tables()[table]["target"], table_methods(table)
    return {"scores": [f"results/{target}/features/scores/{m}.parquet" for m in methods],
            "predictions": [f"results/{target}/features/predictions/{m}/sae.parquet" for m in methods],
            "eval_items": f"results/{target}/features/eval/sae.parquet"}


def table1_methods():
    return table_methods("table1")


def scaling_methods():
    """The methods of Figures 5 and 7: every scaling run and baseline at every n_train, then SelfIE (flat)."""
    names = [scaled_name(m, n) for m in scaling().get("runs", []) + scaling().get("baselines", [])
             for n in scaling()["n_train"]]
    return names + (["selfie"] if "selfie" in feature_explain().get("baselines", []) else [])


def selfie_settings():
    """SelfIE's scales and generation settings (paper: v, 5v, 10v, 25v, 50v; 25 new tokens)."""
    return {**SELFIE_DEFAULTS, **feature_explain().get("selfie", {})}


def method_eval_sets(method):
    """The eval sets a method is scored on (gold labels exist for held-out SAE features only)."""
    return ["sae"] if method == "gold" else ["sae", "act", "dact"]


def feature_train_inputs(wc):
    run = feature_run(wc.run)
    inputs = {"train": f"results/{wc.target}/features/train.parquet",
              "vectors": f"results/{wc.target}/features/train_vectors.safetensors", "model": model_dir(run["explainer"])}
    if feature_run_projection(wc.run) == "pretrained":
        align = run.get("align", "depth")
        inputs["projection"] = f"results/{wc.target}/features/projections/{align}/{run['explainer']}.safetensors"
    return inputs


def library_code(script):
    """Hash of the library code that workflow_scripts/<script>.py can run (introspect.provenance), as a param:
    editing a library module re-runs exactly the jobs whose scripts import it."""
    return code_hash(Path(workflow.basedir) / "workflow_scripts" / f"{script}.py", Path(workflow.basedir) / "lib")
