# Helpers shared by the workflow: registry look-ups, paths, resources.

import dataclasses

from introspect.config import model_specs

MODELS = model_specs(config)


def model_spec(name):
    """The registry entry of a model as a plain dict; passed as params, so editing it re-runs its jobs."""
    return MODELS[name].to_dict()


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


def stage_gpus(stage):
    """GPUs a job of `stage` asks the scheduler for (config compute.gpus; 0 when not listed)."""
    return int(config["compute"].get("gpus", {}).get(stage, 0))
