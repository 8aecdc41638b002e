"""Configuration checks that run before any job: JSON schema, then cross-references between keys.

Errors name the key path (``models.gemma3-270m.n_layers``) and what is allowed, so a typo stops the
run at start-up instead of an hour into it.
"""

from __future__ import annotations

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


def check_config(config: dict[str, Any], schema_path: str | Path = SCHEMA_PATH) -> dict[str, Any]:
    """Validate `config`; raise :class:`ConfigError` listing every problem, else return it unchanged."""
    problems = schema_problems(config, load_schema(schema_path))
    if not problems:  # cross-references only make sense once the shapes are right
        problems = reference_problems(config)
    if problems:
        raise ConfigError(problems)
    return config


def model_specs(config: dict[str, Any]) -> dict[str, ModelSpec]:
    return {name: ModelSpec.from_config(name, entry) for name, entry in config["models"].items()}
