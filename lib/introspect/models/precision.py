"""The precision models compute in: ``compute.dtype`` (``auto``, ``float32``, ``bfloat16``).

``auto`` is bfloat16 where the hardware multiplies bfloat16 matrices natively — a GPU that supports it, or a CPU
with AMX or AVX-512 BF16 instructions (``amx_bf16`` / ``avx512_bf16`` in /proc/cpuinfo; a 2048^3 matmul ran
4.2x faster in bfloat16 than in float32 on a 2-core AVX-512 BF16 machine, docs/benchmarks.md) — and float32
elsewhere, where bfloat16 is emulated and slower. Inference loads the weights in bfloat16; training keeps float32 master weights and optimiser state and
runs the forward and backward matmuls in bfloat16 under :func:`autocast` (mixed precision).
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path

import torch

CHOICES = ("auto", "float32", "bfloat16")
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


@functools.lru_cache(maxsize=1)
def cpu_has_bf16_matmul(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether the CPU has native bfloat16 matrix instructions (AMX or AVX-512 BF16)."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return False
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.partition(":")[2].split())
            break
    return any(flag in flags for flag in BF16_CPU_FLAGS)


def resolve_dtype(dtype: str, device: str | torch.device) -> torch.dtype:
    """The torch dtype of ``compute.dtype`` on `device` (``auto``: see the module docstring)."""
    if dtype not in CHOICES:
        raise ValueError(f"compute.dtype must be one of {CHOICES}, got {dtype!r}")
    if dtype == "float32":
        return torch.float32
    if dtype == "bfloat16":
        return torch.bfloat16
    kind = torch.device(device).type
    if kind == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    return torch.bfloat16 if kind == "cpu" and cpu_has_bf16_matmul() else torch.float32


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def autocast(dtype: torch.dtype, device: str | torch.device):
    """Mixed precision for a forward (and its backward): bfloat16 matmuls over float32 weights; a no-op for
    float32."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)
