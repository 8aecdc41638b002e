"""Safetensors files between stages, written atomically and byte-for-byte reproducibly.

``safetensors.torch.save_file`` writes the string metadata of a file in hash-map order, which changes from one
process to the next, so the same tensors saved twice gave different bytes. :func:`save_tensors` rewrites the
header with the metadata keys sorted (same length, the tensors untouched) before the file takes its name.

Row files (:class:`RowFileWriter`, :class:`RowFile`) are safetensors files of one 2-D tensor written and read a
chunk of rows at a time, for data that must never be held whole (the training feature vectors).
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Mapping

import numpy as np
import torch


def canonical_header(path: str | Path) -> None:
    """Sort the ``__metadata__`` keys of a safetensors file's JSON header in place."""
    with open(path, "r+b") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        raw = f.read(size)
        header = json.loads(raw)
        if "__metadata__" in header:
            header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
        text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        if len(text) > size:
            raise ValueError(f"{path}: the canonical safetensors header is longer than the written one")
        f.seek(8)
        f.write(text.ljust(size, b" "))


def save_tensors(tensors: Mapping[str, torch.Tensor], path: str | Path,
                 metadata: Mapping[str, str] | None = None) -> Path:
    """Save `tensors` (contiguous, on the CPU) with string `metadata` to `path`: atomically, via a temporary
    file in the same folder, and with a canonical header, so the same tensors always give the same bytes."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        save_file({k: t.contiguous().cpu() for k, t in tensors.items()}, str(tmp),
                  metadata=dict(metadata) if metadata else None)
        canonical_header(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


# Row files: one 2-D tensor of a safetensors file read and written a chunk of rows at a time, so that a stage's
# memory is one chunk, whatever the number of rows (feature vectors at the paper's scale: 4M x 4096 in float16,
# 33 GB). Reads use plain positioned reads (os.pread), not a memory map: the process holds only what it asked
# for, and its resident memory says so.

_NUMPY_DTYPES = {"F16": "<f2", "BF16": None, "F32": "<f4", "F64": "<f8", "I64": "<i8", "I32": "<i4"}
_SAFETENSORS_DTYPES = {"float16": "F16", "float32": "F32", "float64": "F64", "int64": "I64", "int32": "I32"}


def chunk_rows(width: int, budget_mb: int, per_row_extra: int = 0) -> int:
    """Rows of `width` float32 values (plus `per_row_extra` bytes each) that fit twice into `budget_mb`
    (a chunk and its conversion), at least 64."""
    per_row = 2 * 4 * width + per_row_extra
    return max(64, int(budget_mb * 2**20 // per_row))


class RowFileError(ValueError):
    """A row file is missing, truncated or not what its reader expects; the message names it."""


def _header(path: Path) -> tuple[dict, int]:
    try:
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) < 8:
                raise RowFileError(f"{path}: not a safetensors file (shorter than its 8-byte header size)")
            (size,) = struct.unpack("<Q", raw)
            if size > 100_000_000:
                raise RowFileError(f"{path}: not a safetensors file (header size {size})")
            header = json.loads(f.read(size))
    except FileNotFoundError:
        raise RowFileError(f"{path} does not exist; re-run the rule that writes it") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RowFileError(f"{path}: not a safetensors file ({exc}); delete it and re-run the rule that "
                           "writes it") from None
    return header, 8 + size


class RowFile:
    """Rows of the 2-D tensor `name` of a safetensors file, read on demand (picklable: holds the path only)."""

    def __init__(self, path: str | Path, name: str = "vectors") -> None:
        self.path, self.name = Path(path), name
        header, self._data_start = _header(self.path)
        if name not in header:
            raise RowFileError(f"{self.path} has no tensor {name!r} (it has {sorted(k for k in header if k != '__metadata__')})")
        entry = header[name]
        dtype = _NUMPY_DTYPES.get(entry["dtype"])
        if dtype is None or len(entry["shape"]) != 2:
            raise RowFileError(f"{self.path}: tensor {name!r} is {entry['dtype']} {entry['shape']}; a row file "
                               "holds a 2-D float16/float32/int tensor")
        self.dtype = np.dtype(dtype)
        self.shape = tuple(entry["shape"])
        self.metadata = header.get("__metadata__", {})
        begin, end = entry["data_offsets"]
        self._offset = self._data_start + begin
        self._row_bytes = self.shape[1] * self.dtype.itemsize
        if end - begin != self.shape[0] * self._row_bytes:
            raise RowFileError(f"{self.path}: tensor {name!r} has {end - begin} bytes for shape {self.shape}")
        if os.path.getsize(self.path) < self._data_start + end:
            raise RowFileError(f"{self.path} is truncated; delete it and re-run the rule that writes it")
        self._fd: int | None = None

    def __len__(self) -> int:
        return self.shape[0]

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_fd": None}

    def __del__(self) -> None:
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)

    def _read(self, start: int, stop: int) -> bytes:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        want = (stop - start) * self._row_bytes
        data = os.pread(self._fd, want, self._offset + start * self._row_bytes)
        if len(data) != want:
            raise RowFileError(f"{self.path}: short read at rows {start}:{stop}; the file changed while in use")
        return data

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows start:stop as a (stop - start, d) array of the file's dtype."""
        start, stop = max(0, start), min(stop, self.shape[0])
        if stop <= start:
            return np.empty((0, self.shape[1]), dtype=self.dtype)
        return np.frombuffer(self._read(start, stop), dtype=self.dtype).reshape(stop - start, self.shape[1])

    def take(self, rows) -> np.ndarray:
        """The given rows (any order, repeats allowed), one read per run of consecutive rows."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), self.shape[1]), dtype=self.dtype)
        if len(rows) == 0:
            return out
        if rows.min() < 0 or rows.max() >= self.shape[0]:
            raise RowFileError(f"{self.path}: row index out of range 0..{self.shape[0] - 1}")
        order = np.argsort(rows, kind="stable")
        sorted_rows = rows[order]
        breaks = np.flatnonzero(np.diff(sorted_rows) > 1) + 1
        for run in np.split(np.arange(len(rows)), breaks):
            first, last = sorted_rows[run[0]], sorted_rows[run[-1]]
            block = self.read(int(first), int(last) + 1)
            out[order[run]] = block[sorted_rows[run] - first]
        return out


class RowFileWriter:
    """Write a (n_rows, d) tensor to a safetensors file a chunk at a time (then :meth:`close`; or use `with`).

    The file is complete and named only when all `n_rows` rows were written (temporary file, then a rename);
    the header is canonical (sorted metadata), so the same rows always give the same bytes and
    ``safetensors.safe_open`` reads the file like any other.
    """

    def __init__(self, path: str | Path, n_rows: int, width: int, dtype: str = "float16", name: str = "vectors",
                 metadata: Mapping[str, str] | None = None) -> None:
        if dtype not in _SAFETENSORS_DTYPES:
            raise ValueError(f"row files hold {sorted(_SAFETENSORS_DTYPES)}, not {dtype!r}")
        self.path, self.n_rows, self.width = Path(path), int(n_rows), int(width)
        self.dtype = np.dtype(dtype)
        nbytes = self.n_rows * self.width * self.dtype.itemsize
        header = {name: {"dtype": _SAFETENSORS_DTYPES[dtype], "shape": [self.n_rows, self.width],
                         "data_offsets": [0, nbytes]}}
        if metadata:
            header = {"__metadata__": dict(sorted(metadata.items())), **header}
        text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        text = text.ljust(-(-len(text) // 8) * 8, b" ")  # data 8-byte aligned, as safetensors writes it
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.with_name(f".{self.path.name}.tmp")
        self._file = open(self._tmp, "wb")
        self._file.write(struct.pack("<Q", len(text)) + text)
        self.written = 0

    def write(self, rows) -> None:
        rows = np.ascontiguousarray(np.asarray(rows), dtype=self.dtype)
        if rows.ndim != 2 or rows.shape[1] != self.width:
            raise ValueError(f"{self.path}: rows of width {self.width} expected, got shape {rows.shape}")
        if self.written + rows.shape[0] > self.n_rows:
            raise ValueError(f"{self.path}: more than the {self.n_rows} rows announced")
        self._file.write(rows.tobytes())
        self.written += rows.shape[0]

    def close(self) -> Path:
        self._file.close()
        if self.written != self.n_rows:
            self._tmp.unlink(missing_ok=True)
            raise ValueError(f"{self.path}: {self.written} rows written of the {self.n_rows} announced")
        os.replace(self._tmp, self.path)
        return self.path

    def __enter__(self) -> "RowFileWriter":
        return self

    def __exit__(self, exc_type, *_) -> None:
        if exc_type is None:
            self.close()
        else:
            self._file.close()
            self._tmp.unlink(missing_ok=True)
