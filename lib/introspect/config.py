"""Configuration checks that run before any job: JSON schema, then cross-references between keys.

Errors name the key path (``models.gemma3-270m.n_layers``) and what is allowed, so a typo stops the
run at start-up instead of an hour into it.
"""

from __future__ import annotations

import json
import logging
import math
import re
import string
from pathlib import Path
from typing import Any, Iterable

import jsonschema
import yaml

from introspect.models.registry import ModelSpec
from introspect.names import FEATURE_BASELINES, is_selfie, split_scaled

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schemas" / "config.schema.yaml"


#: SelfIE's settings when features.explain.selfie leaves them out (the paper's: v, 5v, 10v, 25v, 50v; 25 tokens).
SELFIE_DEFAULTS = {"scales": [1.0, 5.0, 10.0, 25.0, 50.0], "max_new_tokens": 25, "batch_size": 16}


class ConfigError(ValueError):
    """The configuration is invalid; the message lists every problem found, one per line."""

    def __init__(self, problems: Iterable[str]):
        self.problems = list(problems)
        super().__init__(
            "invalid configuration:\n" + "\n".join(f"  - {p}" for p in self.problems)
        )


def _key_path(path: Iterable[Any]) -> str:
    parts = [str(p) for p in path]
    return ".".join(parts) if parts else "<top level>"


def _describe(error: jsonschema.ValidationError) -> str:
    """One line for a schema error: the key path, what was wrong, what is allowed."""
    where = _key_path(error.absolute_path)
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        keys = ", ".join(f"{where}.{k}" if error.absolute_path else k for k in extra)
        return f"{keys}: unknown key; allowed here: {', '.join(allowed)}"
    if error.validator == "enum":
        return f"{where}: {error.instance!r} is not one of {error.validator_value}"
    if error.validator == "type":
        return f"{where}: {error.instance!r} is not of type {error.validator_value}"
    if error.validator == "pattern":
        if re.fullmatch(r"(?:\\[^\w\s]|[\w ])*", error.validator_value):  # a literal such as \{letter\}
            literal = re.sub(r"\\(.)", r"\1", error.validator_value)
            return f"{where}: {error.instance!r} must contain {literal!r}"
        return f"{where}: {error.instance!r} does not match the pattern {error.validator_value!r}"
    if error.validator == "required":
        return f"{where}: {error.message}"
    if error.validator in ("oneOf", "anyOf") and error.context:
        best = jsonschema.exceptions.best_match(error.context)
        return _describe(best) if best is not error else f"{where}: {error.message}"
    return f"{where}: {error.message}"


def load_schema(path: str | Path = SCHEMA_PATH) -> dict[str, Any]:
    return yaml.safe_load(Path(path).read_text())


def schema_problems(config: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path)))
    return [_describe(e) for e in errors]


def reference_problems(config: dict[str, Any]) -> list[str]:
    """Cross-key checks the schema cannot express: model names, tokenizer sources, model fields."""
    problems: list[str] = []
    models = config.get("models", {})
    for name, entry in models.items():
        try:
            spec = ModelSpec.from_config(name, entry)
        except (TypeError, ValueError) as err:
            problems.append(str(err))
            continue
        if spec.source == "gguf_wheel" and not (spec.package and spec.file):
            problems.append(f"models.{name}: a gguf_wheel model needs `package` and `file`")
        if spec.source == "hf" and not spec.repo_id:
            problems.append(f"models.{name}.repo_id: required for an hf model")
        if spec.source == "random":
            if not spec.architecture:
                problems.append(f"models.{name}.architecture: required for a random model")
            if not spec.tokenizer:
                problems.append(f"models.{name}.tokenizer: required for a random model")
            elif spec.tokenizer not in models:
                problems.append(
                    f"models.{name}.tokenizer: {spec.tokenizer!r} is not a model in the registry "
                    f"(known: {', '.join(sorted(models))})"
                )
            elif models[spec.tokenizer].get("source") == "random":
                problems.append(
                    f"models.{name}.tokenizer: {spec.tokenizer!r} is itself a random model; "
                    "name a gguf_wheel or hf model"
                )
            if spec.hidden_size % spec.n_heads:
                problems.append(
                    f"models.{name}.hidden_size: {spec.hidden_size} is not divisible by n_heads {spec.n_heads}"
                )
            if spec.n_heads % spec.n_kv_heads:
                problems.append(
                    f"models.{name}.n_kv_heads: {spec.n_kv_heads} does not divide n_heads {spec.n_heads}"
                )
    for i, name in enumerate(config.get("materialise", {}).get("models", [])):
        if name not in models:
            problems.append(
                f"materialise.models[{i}]: {name!r} is not a model in the registry (known: {', '.join(sorted(models))})"
            )
    patching = config.get("patching")
    if patching:
        for target, entry in patching["targets"].items():
            if target not in models:
                problems.append(
                    f"patching.targets.{target}: not a model in the registry (known: {', '.join(sorted(models))})"
                )
                continue
            depth = models[target]["n_layers"]
            for i, chunk in enumerate(entry.get("chunks", [])):
                past = [layer for layer in chunk if layer >= depth]
                if past:
                    problems.append(
                        f"patching.targets.{target}.chunks[{i}]: layers {past} are past the model's depth "
                        f"({depth} layers: 0..{depth - 1})"
                    )
            if "chunks" not in entry and patching["n_chunks"] > depth:
                problems.append(f"patching.n_chunks: {patching['n_chunks']} chunks but {target} has {depth} layers")
        for i, row in enumerate(patching.get("explain", {}).get("rows", [])):
            for key in ("target", "explainer"):
                if row[key] not in models:
                    problems.append(f"patching.explain.rows[{i}].{key}: {row[key]!r} is not a model in the registry")
            if row["target"] not in patching["targets"]:
                problems.append(
                    f"patching.explain.rows[{i}].target: {row['target']!r} is not one of patching.targets"
                )
        facts = patching["facts"]
        needs = {"files": "path", "hf": "dataset"}.get(facts["backend"])
        if needs and needs not in facts:
            problems.append(f"patching.facts.{needs}: required for backend {facts['backend']}")
    hints = config.get("hints")
    if hints:
        for target in hints["targets"]:
            if target not in models:
                problems.append(
                    f"hints.targets.{target}: not a model in the registry (known: {', '.join(sorted(models))})"
                )
        for i, row in enumerate(hints.get("explain", {}).get("rows", [])):
            for key in ("target", "explainer"):
                if row[key] not in models:
                    problems.append(f"hints.explain.rows[{i}].{key}: {row[key]!r} is not a model in the registry")
            if row["target"] not in hints["targets"]:
                problems.append(f"hints.explain.rows[{i}].target: {row['target']!r} is not one of hints.targets")
        questions = hints["questions"]
        needs = {"files": "path", "hf": "dataset"}.get(questions["backend"])
        if needs and needs not in questions:
            problems.append(f"hints.questions.{needs}: required for backend {questions['backend']}")
    problems += _feature_problems(config.get("features"), models, patching)
    return problems


def _feature_problems(features: dict[str, Any] | None, models: dict[str, Any], patching) -> list[str]:
    """Cross-key checks of the features section: models, layers within depth, backend options present."""
    if not features:
        return []
    problems = []
    known = ", ".join(sorted(models))
    for target, entry in features["targets"].items():
        if target not in models:
            problems.append(f"features.targets.{target}: not a model in the registry (known: {known})")
            continue
        depth = models[target]["n_layers"]
        past = [layer for layer in entry["layers"] if layer >= depth]
        if past:
            problems.append(f"features.targets.{target}.layers: {past} are past the model's depth "
                            f"({depth} layers: 0..{depth - 1})")
        sae = entry.get("sae", features["sae"])
        if sae["backend"] in ("llamascope", "gemmascope") and "repo" not in sae:
            problems.append(f"features.targets.{target}.sae.repo: required for backend {sae['backend']}")
        labels = entry.get("labels", features["labels"])
        for key in ("model_id", "sae_id"):
            if labels["backend"] == "neuronpedia" and key not in labels:
                problems.append(f"features.targets.{target}.labels.{key}: required for backend neuronpedia")
    explain = features.get("explain")
    if explain:
        problems += _feature_table_problems("features.explain", explain, features, models)
        table4 = explain.get("table4")
        if table4:
            problems += _feature_table_problems("features.explain.table4", table4, features, models)
            for name in sorted(set(explain["runs"]) & set(table4["runs"])):
                problems.append(f"features.explain.table4.runs.{name}: Table 1 has a run of the same name; run "
                                "names are shared by both tables, rename one")
        scale = explain.get("scaling")
        if scale:
            for i, name in enumerate(scale.get("runs", [])):
                if name not in explain["runs"]:
                    problems.append(f"features.explain.scaling.runs[{i}]: {name!r} is not one of features.explain.runs")
    for i, name in enumerate(features["similarity"]["explainers"]):
        if name not in models:
            problems.append(f"features.similarity.explainers[{i}]: {name!r} is not a model in the registry")
    corpus = features["corpus"]
    needs = {"files": "path", "hf": "dataset"}.get(corpus["backend"])
    if needs and needs not in corpus:
        problems.append(f"features.corpus.{needs}: required for backend {corpus['backend']}")
    simulator = features["simulator"]
    if simulator["backend"] in ("openai", "finetuned") and "model" not in simulator:
        problems.append(f"features.simulator.model: required for backend {simulator['backend']}")
    if not patching:
        problems.append("features: the dACT eval set reuses the counterfactual pairs of the patching section; "
                        "add a patching section")
    return problems


def _feature_table_problems(key: str, section: dict, features: dict, models: dict) -> list[str]:
    """Cross-references of one feature-description table (Table 1: features.explain; Table 4: its table4)."""
    problems = []
    target = section["target"]
    if target not in features["targets"]:
        problems.append(f"{key}.target: {target!r} is not one of features.targets")
    for name, run in section["runs"].items():
        if name in FEATURE_BASELINES or is_selfie(name) or split_scaled(name)[1] is not None:
            problems.append(f"{key}.runs.{name}: the name is taken by a baseline or a scaling point; rename the run")
        if run["explainer"] not in models:
            problems.append(f"{key}.runs.{name}.explainer: {run['explainer']!r} is not a model in the registry")
        elif (run.get("projection", "auto") == "none" and target in models
              and models[run["explainer"]]["hidden_size"] != models[target]["hidden_size"]):
            problems.append(f"{key}.runs.{name}.projection: none, but {run['explainer']} "
                            f"({models[run['explainer']]['hidden_size']}) and {target} "
                            f"({models[target]['hidden_size']}) differ in hidden size; use random or pretrained")
        if "align" in run and run.get("projection") != "pretrained":
            problems.append(f"{key}.runs.{name}.align: only a pre-trained projection is aligned; set "
                            f"projection: pretrained or drop align")
    return problems


def nan_problems(value: Any, path: tuple = ()) -> list[str]:
    """Every NaN in the config: it passes every schema bound (NaN compares false with all of them)."""
    if isinstance(value, float) and math.isnan(value):
        return [f"{_key_path(path)}: .nan is not a number; give a number (.inf where the key allows no limit)"]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in nan_problems(v, (*path, k))]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in nan_problems(v, (*path, i))]
    return []


def _template_fields(template: str) -> list[str] | str:
    """The {field} names of a str.format template, or the reason it is not one."""
    try:
        return [field for _, field, _, _ in string.Formatter().parse(template) if field is not None]
    except ValueError as err:
        return str(err)


def _check_template(key: str, template: str, allowed: set[str], required: set[str], how: str) -> list[str]:
    fields = _template_fields(template)
    if isinstance(fields, str):
        return [f"{key}: {template!r} is not a template ({fields}); write literal braces as {{{{ and }}}}"]
    problems = []
    unknown = sorted({f for f in fields if f not in allowed})
    if unknown:
        problems.append(f"{key}: unknown field(s) {', '.join('{' + f + '}' for f in unknown)} in {template!r}; "
                        f"{how}")
    missing = sorted(required - set(fields))
    if missing:
        problems.append(f"{key}: {template!r} has no {', '.join('{' + f + '}' for f in missing)}; {how}")
    return problems


def _prompt_format_problems(key: str, prompt_format: str) -> list[str]:
    """prompt_format is cut at the literal {statement} / {options} fields, so any other {word} reaches the model."""
    how = "the fields are {statement} (the fact's prompt) and {options} (the answer options)"
    problems = [f"{key}: unknown field {{{f}}} in {prompt_format!r}; {how}"
                for f in sorted(set(re.findall(r"\{(\w*)\}", prompt_format)) - {"statement", "options"})]
    if "{statement}" not in prompt_format:
        problems.append(f"{key}: {prompt_format!r} has no {{statement}}; {how}")
    return problems


def template_problems(config: dict[str, Any]) -> list[str]:
    """Templates whose fields the code does not fill (they would reach a model or a path as literal text)."""
    problems = []
    for target, entry in (config.get("patching") or {}).get("targets", {}).items():
        problems += _prompt_format_problems(f"patching.targets.{target}.prompt_format", entry["prompt_format"])
    for target, entry in (config.get("hints") or {}).get("targets", {}).items():
        problems += _check_template(f"hints.targets.{target}.hint_format", entry["hint_format"], {"letter"},
                                    {"letter"}, "the one field is {letter} (the hinted answer, A-D)")
    features = config.get("features") or {}
    saes = [("features.sae", features.get("sae") or {})]
    saes += [(f"features.targets.{t}.sae", e["sae"]) for t, e in features.get("targets", {}).items() if "sae" in e]
    labels = [("features.labels", features.get("labels") or {})]
    labels += [(f"features.targets.{t}.labels", e["labels"]) for t, e in features.get("targets", {}).items()
               if "labels" in e]
    for key, section in saes + labels:
        for name in ("file", "subfolder", "sae_id"):
            if isinstance(section.get(name), str):
                problems += _check_template(f"{key}.{name}", section[name], {"layer"}, set(),
                                            "the one field is {layer} (the target layer)")
    return problems


def setting_problems(config: dict[str, Any]) -> list[str]:
    """Values that pass the schema one by one but not together."""
    problems = []
    features = config.get("features")
    if features:
        activations = features["activations"]
        if activations.get("max_tokens") is not None and activations["seq_len"] > activations["max_tokens"]:
            problems.append(f"features.activations.seq_len: {activations['seq_len']} tokens per sequence but "
                            f"max_tokens is {activations['max_tokens']}: not one sequence fits; lower seq_len or "
                            "raise max_tokens")
        n_test = features.get("split", {}).get("n_test")
        n_similar = features["similarity"]["n_features"]
        if n_test is not None and n_similar > n_test:
            problems.append(f"features.similarity.n_features: {n_similar} features per layer, but the split holds "
                            f"out {n_test} (features.split.n_test); lower n_features or raise n_test")
    return problems


def _trainings(config: dict[str, Any]) -> list[tuple[dict, Any]]:
    """The train settings of every training the config asks for, as the rules merge them (a feature run's
    overrides over features.explain.train), each with a function naming the section a key was set in."""
    trainings = []
    for task in ("patching", "hints"):
        explain = (config.get(task) or {}).get("explain")
        if explain:
            trainings.append((explain["train"], lambda key, task=task: f"{task}.explain.train.{key}"))
    explain = (config.get("features") or {}).get("explain")
    if explain:
        shared = explain["train"]
        for table_key, table in (("features.explain", explain), ("features.explain.table4", explain.get("table4"))):
            for name, run in (table or {}).get("runs", {}).items():
                own = run.get("train", {})

                def where(key, own=own, run_key=f"{table_key}.runs.{name}"):
                    return f"{run_key}.train.{key}" if key in own else f"features.explain.train.{key} (run {run_key})"

                trainings.append(({**shared, **own}, where))
    return trainings


def file_problems(config: dict[str, Any], root: str | Path, workflow_dir: str | Path = SCHEMA_PATH.parents[1]
                  ) -> list[str]:
    """Input files the config names, read before any job: data paths relative to `root` (the directory the
    jobs run in), DeepSpeed configs relative to `workflow_dir` (the Snakefile's, as the training rules read them).

    Missing paths and DeepSpeed configs, and counts the builtin or local data cannot supply (n_options objects
    per relation, n_pairs pairs, questions.n questions), which a job would otherwise find an hour later."""
    root = Path(root)
    problems = []

    def missing(key: str, value: str, what: str, base: Path = root) -> bool:
        path = base / value
        if not path.exists():
            problems.append(f"{key}: {value!r} does not exist (looked for {path}); {what}")
            return True
        return False

    patching = config.get("patching")
    if patching and patching["facts"]["backend"] in ("builtin", "files"):
        facts = patching["facts"]
        if facts["backend"] == "builtin" or not missing("patching.facts.path", facts["path"],
                                                         "give a CounterFact .json, .jsonl or .parquet file"):
            problems += _pair_problems(patching, root, config.get("seed", 0))
    hints = config.get("hints")
    if hints:
        questions = hints["questions"]
        if questions["backend"] == "files":
            missing("hints.questions.path", questions["path"],
                    "give an MMLU CSV folder, an MMLU CSV file or a .json/.jsonl/.parquet question file")
        elif questions["backend"] == "builtin" and questions.get("n"):
            from introspect.sources.questions import builtin_capacity

            if questions["n"] > builtin_capacity():
                problems.append(f"hints.questions.n: {questions['n']} questions asked, but the builtin generator "
                                f"makes {builtin_capacity()}; lower n or use backend files/hf (MMLU)")
    corpus = (config.get("features") or {}).get("corpus")
    if corpus and corpus["backend"] == "files":
        missing("features.corpus.path", corpus["path"], "give a text file, a folder of .txt files or a .jsonl(.gz)")
    for train, where in _trainings(config):
        if train.get("engine") != "deepspeed":
            continue
        value, base = train.get("deepspeed_config"), Path(workflow_dir)
        if not value:
            problems.append(f"{where('deepspeed_config')}: engine deepspeed (set in {where('engine')}) needs a "
                            "DeepSpeed JSON config, e.g. configs/deepspeed/zero1.json or zero3.json")
        elif not missing(where("deepspeed_config"), value, "name a DeepSpeed JSON config relative to the workflow "
                         "folder (configs/deepspeed/*.json)", base):
            try:
                json.loads((base / value).read_text())
            except (OSError, UnicodeDecodeError, ValueError) as err:
                problems.append(f"{where('deepspeed_config')}: {value!r} is not a JSON file ({err})")
    return list(dict.fromkeys(problems))  # runs sharing one setting report it once


def _pair_problems(patching: dict[str, Any], root: Path, seed: int) -> list[str]:
    """n_options and n_pairs against the facts the builtin table or the local file holds."""
    from introspect.sources.facts import FactsError, load_facts, make_pairs, option_counts

    facts = dict(patching["facts"])
    if facts.get("path"):
        facts["path"] = str(root / facts["path"])
    try:
        loaded = load_facts(**facts)
    except FactsError as err:
        return [f"patching.facts: {err}"]
    n_options = patching["n_options"]
    most = max(option_counts(loaded).values(), default=0)
    if most < n_options:
        return [f"patching.n_options: {n_options} options per prompt, but no relation of the facts has that many "
                f"distinct objects (the most: {most}); lower n_options"]
    facts_log = logging.getLogger("introspect.sources.facts")  # its skip/short warnings belong to the job's log
    level = facts_log.level
    facts_log.setLevel(logging.ERROR)
    try:
        possible = len(make_pairs(loaded, patching["n_pairs"], seed=seed, n_options=n_options))
    finally:
        facts_log.setLevel(level)
    if possible < patching["n_pairs"]:
        return [f"patching.n_pairs: {patching['n_pairs']} pairs asked, but the facts make {possible} with "
                f"n_options {n_options}; lower n_pairs (or add facts)"]
    return []


def check_config(config: dict[str, Any], schema_path: str | Path = SCHEMA_PATH,
                 root: str | Path | None = None) -> dict[str, Any]:
    """Validate `config`; raise :class:`ConfigError` listing every problem, else return it unchanged.

    With `root` (the directory the jobs run in) the files the config names are checked too (DeepSpeed
    configs in the workflow folder, the one holding `schema_path`'s schemas/)."""
    problems = nan_problems(config) + schema_problems(config, load_schema(schema_path))
    if not problems:  # cross-references only make sense once the shapes are right
        problems = reference_problems(config) + template_problems(config) + setting_problems(config)
    if not problems and root is not None:
        problems = file_problems(config, root, Path(schema_path).resolve().parents[1])
    if problems:
        raise ConfigError(problems)
    return config


def model_specs(config: dict[str, Any]) -> dict[str, ModelSpec]:
    return {name: ModelSpec.from_config(name, entry) for name, entry in config["models"].items()}
