"""Shared test helpers: the repository paths, a Snakemake runner, and the smoke workflow run once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SNAKEMAKE = BIN / "snakemake"
SMOKE = REPO / "configs" / "smoke.yaml"


def offline_env(**extra: str) -> dict[str, str]:
    """Environment for workflow runs in tests: offline hubs, the venv's tools on PATH."""
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}")
    env.update(extra)
    return env


def run_snakemake(workdir: Path, *args: str, configfile: Path | None = SMOKE, timeout: int = 900,
                  env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run the workflow in `workdir` (results, resources and logs land there, not in the repository)."""
    cmd = [str(SNAKEMAKE), "-s", str(REPO / "Snakefile"), "--directory", str(workdir)]
    if configfile is not None:
        cmd += ["--configfile", str(configfile)]
    cmd += ["--cores", "2", *args]  # after --configfile, which would swallow a positional target
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env or offline_env())


def output_of(proc: subprocess.CompletedProcess) -> str:
    return proc.stdout + proc.stderr


def write_config(path: Path, base: Path, edit) -> Path:
    """Write a copy of config `base` to `path` after `edit(config_dict)` changed it."""
    config = yaml.safe_load(base.read_text())
    edit(config)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory) -> Path:
    """The smoke config's targets, built once per test session; returns the working directory."""
    workdir = tmp_path_factory.mktemp("smoke")
    proc = run_snakemake(workdir)
    assert proc.returncode == 0, output_of(proc)[-5000:]
    return workdir


@pytest.fixture(scope="session")
def smollm2_tokenizer_dir(tmp_path_factory) -> Path:
    """SmolLM2's real tokenizer (with its chat template), read from the shipped GGUF."""
    from introspect.config import model_specs
    from introspect.models.materialise import materialise_tokenizer

    specs = model_specs(yaml.safe_load(SMOKE.read_text()))
    return materialise_tokenizer(specs["smollm2-135m"].tokenizer_spec(), tmp_path_factory.mktemp("tok") / "smollm2-135m")


@pytest.fixture(scope="session")
def gemma3_tokenizer_dir(tmp_path_factory) -> Path:
    """Gemma-3's real tokenizer with the registry's chat template, read from the shipped GGUF chunks."""
    from introspect.config import model_specs
    from introspect.models.materialise import materialise_tokenizer

    specs = model_specs(yaml.safe_load(SMOKE.read_text()))
    return materialise_tokenizer(specs["gemma3-270m"].tokenizer_spec(), tmp_path_factory.mktemp("tok") / "gemma3-270m")


def tiny_llama(out: Path, tokenizer_dir: Path, n_layers: int, hidden_size: int = 64, seed: int = 0) -> Path:
    """A seeded random Llama with SmolLM2's real tokenizer, materialised at `out` (seconds)."""
    from introspect.models.materialise import materialise_model
    from introspect.models.registry import ModelSpec

    spec = ModelSpec(name=out.name, source="random", architecture="llama", tokenizer="smollm2-135m",
                     n_layers=n_layers, hidden_size=hidden_size, seed=seed)
    materialise_model(spec, tokenizer_dir, out)
    return out


def synthetic_sweep(n_pairs=40, seed=0):
    """A patching sweep table of `n_pairs` pairs with seeded outcomes (no model): for balancing and schemas."""
    import polars as pl

    g = torch.Generator().manual_seed(seed)
    rows = []
    for p in range(n_pairs):
        for t, ttype in enumerate(["subject final", "relation", "relation", "orig answer option", " or"]):
            for c in range(4):
                changed = bool(torch.rand(1, generator=g) < (0.9 if ttype == "subject final" and c < 2 else 0.15))
                rows.append((p, t, ttype, c, changed))
    n = len(rows)
    return pl.DataFrame({
        "pair_id": [r[0] for r in rows], "relation_id": ["P36"] * n, "subject": ["s"] * n,
        "counterfactual_subject": ["c"] * n, "orig_object": ["o"] * n, "new_object": ["n"] * n,
        "prompt": ["x"] * n, "orig_pos": [r[1] for r in rows], "counterfact_pos": [r[1] for r in rows],
        "token": [r[2] for r in rows], "token_type": [r[2] for r in rows], "chunk": [r[3] for r in rows],
        "layers": [[r[3]] for r in rows], "original_continuation": ["a"] * n, "patched_continuation": ["b"] * n,
        "has_changed": [r[4] for r in rows],
    }).with_columns(pl.Series("vector", torch.randn(n, 8).numpy(), dtype=pl.Array(pl.Float32, 8)))


@pytest.fixture
def server():
    """A local OpenAI-compatible stub server (tests/openai_stub.py), shut down after the test."""
    from openai_stub import running_stub

    yield from running_stub()
