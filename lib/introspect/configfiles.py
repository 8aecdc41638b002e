"""Reading a config file strictly: every problem named by file, line and column.

Snakemake reads config files itself and, for a YAML syntax error, says only "Config file is not valid JSON
or YAML", without file or line; a key written twice silently keeps its last value. The Snakefile runs
:func:`check_config_files` on the files Snakemake read (and on ``config.yaml`` before Snakemake reads it), and
``introspect check-config FILE`` does the same from a shell: for a ``--configfile`` with a syntax error
Snakemake stops before the workflow's own code runs, so that command is the way to get the line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

import yaml


class ConfigFileError(ValueError):
    """A config file that cannot be read as one YAML mapping; the message names file, line and column."""


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key written twice in one mapping (YAML says keys are unique)."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<:` merge keys may repeat
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: SafeLoader reports it below
                continue
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping", node.start_mark,
                    f"the key {key!r} is written twice (first at line {first.line + 1}); YAML keeps only the "
                    "last, so delete or merge one of them", key_node.start_mark)
            seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


def _where(path: Path, mark) -> str:
    return f"{path}:{mark.line + 1}:{mark.column + 1}"


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The mapping in a YAML (or JSON) config file; :class:`ConfigFileError` naming file:line:column otherwise."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigFileError(f"{path}: no such config file") from None
    except OSError as exc:
        raise ConfigFileError(f"{path}: cannot read the config file: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise ConfigFileError(f"{path}:{line}: byte {raw[exc.start]:#04x} is not UTF-8; save the file as UTF-8"
                              ) from None
    try:  # JSON first, as Snakemake reads it (YAML 1.1 would read a JSON 1e-4 as a string)
        data = json.loads(text, object_pairs_hook=_unique_pairs(path))
    except json.JSONDecodeError:
        pass
    else:
        return _mapping(path, data)
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        lines = text.splitlines()
        hint = ""
        if mark is not None and mark.line < len(lines) and "\t" in lines[mark.line]:
            hint = "; the line holds a tab: YAML indents with spaces only"
        where = _where(path, mark) if mark is not None else str(path)
        problem = exc.problem or "not valid YAML"
        context = f" ({exc.context})" if exc.context and exc.context != "while reading a mapping" else ""
        raise ConfigFileError(f"{where}: {problem}{context}{hint}") from None
    except yaml.YAMLError as exc:
        raise ConfigFileError(f"{path}: not valid YAML: {exc}") from None
    return _mapping(path, data)


def _mapping(path: Path, data: Any) -> dict[str, Any]:
    if data is None:
        raise ConfigFileError(f"{path}: the config file is empty; expected a mapping of sections (seed, compute, "
                              "models, ...), as in config.yaml")
    if not isinstance(data, dict):
        raise ConfigFileError(f"{path}: the top level is a {type(data).__name__}; expected a mapping of sections "
                              "(seed, compute, models, ...), as in config.yaml")
    return data


def _unique_pairs(path: Path):
    """json.loads' object_pairs_hook: a key written twice in one JSON object is an error, as in YAML."""
    def hook(pairs):
        seen = set()
        for key, _ in pairs:
            if key in seen:
                raise ConfigFileError(f"{path}: the key {key!r} is written twice in one JSON object; only the last "
                                      "would be kept, so delete or merge one of them")
            seen.add(key)
        return dict(pairs)
    return hook


def merge_configs(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """`overlay` over `base` as Snakemake merges config files given in order: mappings merge key by key,
    anything else is replaced."""
    merged = dict(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_configs(merged[key], value)
        else:
            merged[key] = value
    return merged


def check_config_files(paths: Iterable[str | Path]) -> None:
    """Read every file strictly; raise one :class:`ConfigFileError` listing the problems of all of them."""
    problems = []
    for path in paths:
        try:
            read_config_file(path)
        except ConfigFileError as err:
            problems.append(str(err))
    if problems:
        raise ConfigFileError("invalid config file:\n" + "\n".join(f"  - {p}" for p in problems))
