"""Safetensors files are written atomically with a canonical header: the same tensors give the same bytes."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
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


def test_row_file_streams_rows_and_reads_like_any_safetensors_file(tmp_path):
    import pickle

    import numpy as np
    from safetensors.torch import load_file

    from introspect.tensorfiles import RowFile, RowFileWriter

    rows = np.arange(40, dtype=np.float32).reshape(10, 4) / 3
    with RowFileWriter(tmp_path / "v.safetensors", 10, 4, metadata={"z": "1", "a": "2"}) as out:
        for start in range(0, 10, 3):  # chunks of 3, 3, 3, 1
            out.write(rows[start:start + 3])
    loaded = load_file(str(tmp_path / "v.safetensors"))["vectors"]
    assert loaded.dtype == torch.float16 and loaded.numpy().tolist() == rows.astype(np.float16).tolist()
    again = RowFileWriter(tmp_path / "w.safetensors", 10, 4, metadata={"a": "2", "z": "1"})
    again.write(rows)
    again.close()
    assert (tmp_path / "v.safetensors").read_bytes() == (tmp_path / "w.safetensors").read_bytes()
    file = pickle.loads(pickle.dumps(RowFile(tmp_path / "v.safetensors")))  # ranks get it pickled
    assert file.shape == (10, 4) and file.metadata == {"a": "2", "z": "1"}
    index = [7, 2, 3, 4, 2, 9, 0]  # unsorted, repeated, runs
    assert file.take(index).tolist() == rows[index].astype(np.float16).tolist()
    assert file.read(8, 99).shape == (2, 4) and file.read(4, 8).tolist() == rows[4:8].astype(np.float16).tolist()


def test_row_file_errors_name_the_file(tmp_path):
    import numpy as np

    from introspect.tensorfiles import RowFile, RowFileError, RowFileWriter

    with pytest.raises(ValueError, match="3 rows written of the 5 announced"):
        with RowFileWriter(tmp_path / "short.safetensors", 5, 2) as out:
            out.write(np.zeros((3, 2)))
    assert not (tmp_path / "short.safetensors").exists() and not list(tmp_path.glob(".*tmp"))
    with RowFileWriter(tmp_path / "ok.safetensors", 5, 2) as out:
        out.write(np.zeros((5, 2)))
    data = (tmp_path / "ok.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[:-4])
    with pytest.raises(RowFileError, match="cut.safetensors is truncated"):
        RowFile(tmp_path / "cut.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a tensor file at all")
    with pytest.raises(RowFileError, match="junk.safetensors: not a safetensors file"):
        RowFile(tmp_path / "junk.safetensors")
    with pytest.raises(RowFileError, match="missing.safetensors does not exist"):
        RowFile(tmp_path / "missing.safetensors")
    with pytest.raises(RowFileError, match="out of range"):
        RowFile(tmp_path / "ok.safetensors").take([5])
