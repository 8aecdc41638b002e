"""The install files agree with each other, and CI runs the README's test command."""

from __future__ import annotations

import re

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
