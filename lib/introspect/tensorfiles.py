"""Safetensors files between stages, written atomically and byte-for-byte reproducibly.

``safetensors.torch.save_file`` writes the string metadata of a file in hash-map order, which changes from one
process to the next, so the same tensors saved twice gave different bytes. :func:`save_tensors` rewrites the
header with the metadata keys sorted (same length, the tensors untouched) before the file takes its name.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Mapping

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
