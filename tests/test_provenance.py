"""A job's code hash covers exactly the library code its script can run (introspect.provenance)."""

from __future__ import annotations

import shutil
from pathlib import Path

from conftest import REPO

from introspect.provenance import code_files, code_hash

SCRIPTS = REPO / "workflow_scripts"


def _tree(tmp_path: Path) -> tuple[Path, Path]:
    lib = tmp_path / "lib"
    pkg = lib / "introspect"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "data").mkdir()
    (pkg / "__init__.py").write_text('"""pkg"""\n')
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "a.py").write_text("def f():\n    from introspect.sub.b import g\n    return g()\n")
    (pkg / "sub" / "b.py").write_text("def g():\n    return 1\n")
    (pkg / "unrelated.py").write_text("X = 1\n")
    (pkg / "reader.py").write_text('from importlib import resources\nT = resources.files("introspect")\n')
    (pkg / "data" / "table.json").write_text("{}")
    script = tmp_path / "job.py"
    script.write_text("from introspect.sub.a import f\nf()\n")
    return lib, script


def test_hash_follows_function_level_imports_and_ignores_unrelated_modules(tmp_path):
    lib, script = _tree(tmp_path)
    files = {p.relative_to(lib).as_posix() for p in code_files(script, lib)}
    assert files == {"introspect/__init__.py", "introspect/sub/__init__.py", "introspect/sub/a.py",
                     "introspect/sub/b.py"}
    before = code_hash.__wrapped__(script, lib)
    (lib / "introspect" / "unrelated.py").write_text("X = 2\n")
    assert code_hash.__wrapped__(script, lib) == before
    (lib / "introspect" / "sub" / "b.py").write_text("def g():\n    return 2\n")  # reached only inside f()
    assert code_hash.__wrapped__(script, lib) != before


def test_data_files_count_for_modules_that_read_them(tmp_path):
    lib, script = _tree(tmp_path)
    script.write_text("from introspect import reader\n")
    before = code_hash.__wrapped__(script, lib)
    (lib / "introspect" / "data" / "table.json").write_text('{"a": 1}')
    assert code_hash.__wrapped__(script, lib) != before


def test_hash_is_the_same_in_another_clone(tmp_path):
    copy = tmp_path / "clone"
    shutil.copytree(REPO / "lib", copy / "lib", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copytree(SCRIPTS, copy / "workflow_scripts")
    for name in ("table1_4", "features_sae", "patching_sweep"):
        assert code_hash.__wrapped__(copy / "workflow_scripts" / f"{name}.py", copy / "lib") == \
            code_hash.__wrapped__(SCRIPTS / f"{name}.py", REPO / "lib")


def test_table_scripts_do_not_reach_torch_code():
    # tables and figures only need the reporting code: editing a model module must not re-run them
    for name in ("table1_4", "table2", "table3", "table5", "table6", "table7", "features_sae_table", "figure6",
                 "figure5_7"):
        files = {p.relative_to(REPO / "lib").as_posix() for p in code_files(SCRIPTS / f"{name}.py", REPO / "lib")}
        assert not any(f.startswith(("introspect/models/", "introspect/explainers/model")) for f in files), name
