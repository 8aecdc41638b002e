"""Which library code a workflow script runs, as one hash: a job re-runs when that code changes.

Snakemake re-runs a job when its script changes, not when the library the script imports changes. Every
rule therefore gets ``params: code=...``, the hash of the library sources its script can reach: the
``introspect`` modules it imports, the modules those import (at module level or inside functions), the
``__init__.py`` of every package on the way, and the package's data files for a module that reads them.
Editing ``introspect/reporting/figures.py`` re-runs the figure jobs and nothing else; editing
``introspect/groundtruth/sae.py`` re-runs the SAE jobs and everything downstream of their outputs.

The import graph is read with :mod:`ast` (nothing is imported), so hashing costs milliseconds per rule.
An import of a name that is not a module (``from introspect.names import split_scaled``) counts as an import
of the module that defines it.
"""

from __future__ import annotations

import ast
import functools
import hashlib
from pathlib import Path

PACKAGE = "introspect"
DATA_MARKER = f'files("{PACKAGE}")'  # how a module reads the package's data files (importlib.resources)


def _module_file(lib: Path, module: str) -> Path | None:
    """The source file of `module` under `lib` (a module file or a package's ``__init__.py``), if any."""
    base = lib.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported_modules(source: str, lib: Path) -> set[str]:
    """The ``introspect`` modules that a source text imports anywhere (module level or in functions)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.split(".")[0] == PACKAGE)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] != PACKAGE:
                continue
            found.add(node.module)
            for alias in node.names:  # `from introspect.scoring import simulators` imports a module
                if _module_file(lib, f"{node.module}.{alias.name}"):
                    found.add(f"{node.module}.{alias.name}")
    return found


def _with_parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def code_files(script: str | Path, lib: str | Path) -> list[Path]:
    """The library files that `script` can run: its imports' closure under `lib` (the folder holding
    ``introspect/``), sorted. Raises FileNotFoundError when the script does not exist."""
    lib = Path(lib)
    todo = list(_imported_modules(Path(script).read_text(encoding="utf-8"), lib))
    seen: set[str] = set()
    files: set[Path] = set()
    while todo:
        module = todo.pop()
        for name in _with_parents(module):
            if name in seen:
                continue
            seen.add(name)
            path = _module_file(lib, name)
            if path is None:
                continue
            files.add(path)
            source = path.read_text(encoding="utf-8")
            if DATA_MARKER in source:
                files.update(p for p in (lib / PACKAGE / "data").rglob("*") if p.is_file())
            todo.extend(_imported_modules(source, lib) - seen)
    return sorted(files)


@functools.lru_cache(maxsize=None)
def code_hash(script: str | Path, lib: str | Path) -> str:
    """A short sha256 over the relative paths and contents of :func:`code_files` (stable across clones)."""
    lib = Path(lib)
    digest = hashlib.sha256()
    for path in code_files(script, lib):
        digest.update(path.relative_to(lib).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:16]
