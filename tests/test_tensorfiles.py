"""Safetensors files are written atomically with a canonical header: the same tensors give the same bytes."""

from __future__ import annotations

import os
import subprocess
import sys

import torch
from safetensors import safe_open

from introspect.tensorfiles import save_tensors

SAVE = """
import sys, torch
from introspect.tensorfiles import save_tensors
tensors = {"b": torch.arange(6.0).reshape(2, 3), "a": torch.ones(4, dtype=torch.int64)}
save_tensors(tensors, sys.argv[1], {f"key{i}": str(i) for i in range(12)})
"""


def test_same_tensors_same_bytes_across_processes(tmp_path):
    outs = []
    for seed in ("1", "2", "3"):
        out = tmp_path / f"t{seed}.safetensors"
        env = dict(os.environ, PYTHONHASHSEED=seed)
        subprocess.run([sys.executable, "-c", SAVE, str(out)], check=True, env=env, timeout=120)
        outs.append(out.read_bytes())
    assert outs[0] == outs[1] == outs[2]
    with safe_open(str(tmp_path / "t1.safetensors"), "pt") as f:
        assert f.metadata() == {f"key{i}": str(i) for i in range(12)}
        assert torch.equal(f.get_tensor("b"), torch.arange(6.0).reshape(2, 3))


def test_save_leaves_no_temporary_file(tmp_path):
    path = save_tensors({"x": torch.zeros(3)}, tmp_path / "sub" / "x.safetensors")
    assert path.exists() and sorted(p.name for p in path.parent.iterdir()) == ["x.safetensors"]
