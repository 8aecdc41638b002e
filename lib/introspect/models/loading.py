"""Loading a materialised model folder onto a device, and the ``compute.device`` rule (``auto``, ``cpu``, ``cuda``)."""

from __future__ import annotations

from pathlib import Path

import torch

from introspect.models.registry import DTYPES, ModelInfo


def load_model(model_dir: str | Path, device: str = "cpu", dtype: str | None = None):
    """Load a materialised model folder: returns ``(model, tokenizer, info)`` with the model in eval mode."""
    import transformers

    info = ModelInfo.read(model_dir)
    torch_dtype = DTYPES[dtype or info.dtype]
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch_dtype).to(device).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    return model, tokenizer, info


def resolve_device(device: str) -> str:
    """``auto`` means the first CUDA device when there is one, else the CPU."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"compute.device is {device!r} but torch sees no CUDA device; use 'auto' or 'cpu'")
    return device
