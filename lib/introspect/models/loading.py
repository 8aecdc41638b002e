"""Loading a materialised model folder onto a device, and the ``compute.device`` rule (``auto``, ``cpu``, ``cuda``)."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from introspect.models.precision import dtype_name, resolve_dtype
from introspect.models.registry import DTYPES, ModelInfo

log = logging.getLogger(__name__)


def load_model(model_dir: str | Path, device: str = "cpu", dtype: str | torch.dtype | None = None):
    """Load a materialised model folder: returns ``(model, tokenizer, info)`` with the model in eval mode.

    `dtype` (a name or a torch dtype; e.g. :func:`introspect.models.precision.resolve_dtype` of compute.dtype)
    is the precision the weights are loaded in; None keeps the folder's own (the registry's dtype)."""
    import transformers

    info = ModelInfo.read(model_dir)
    torch_dtype = dtype if isinstance(dtype, torch.dtype) else DTYPES[dtype or info.dtype]
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch_dtype).to(device).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    return model, tokenizer, info


def resolve_device(device: str, rule: str | None = None, gpus: str | None = None) -> str:
    """The torch device a job runs on, from ``compute.device``: ``auto`` means the first CUDA device when there
    is one, else the CPU; ``cpu``, ``cuda`` and ``cuda:N`` are checked against what torch sees.

    `rule` (the Snakemake rule, e.g. ``snakemake.rule``) and `gpus` (its ``compute.gpus`` key, e.g.
    ``"patching"``) only make the error say which job asked for the device and which settings to change.
    """
    where = f"rule {rule}: " if rule else ""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        request = (f"compute.gpus.{gpus} (the GPUs this job asks the scheduler for; 0 when absent)" if gpus
                   else "the job's GPU request")
        if not torch.cuda.is_available():
            raise RuntimeError(
                f"{where}compute.device is {device!r} but torch sees no CUDA device. Run the job where a GPU is "
                f"visible (check {request} and CUDA_VISIBLE_DEVICES), or set compute.device to 'auto' or 'cpu'")
        index = device.partition(":")[2]
        if index and (not index.isdigit() or int(index) >= torch.cuda.device_count()):
            raise RuntimeError(
                f"{where}compute.device is {device!r} but torch sees {torch.cuda.device_count()} CUDA device(s) "
                f"(cuda:0..cuda:{torch.cuda.device_count() - 1}); set compute.device to 'cuda' (the first visible "
                f"GPU) or raise {request}")
    return device


def load_stage_model(model_dir: str | Path, device: str, dtype: str = "auto", rule: str | None = None,
                     gpus: str | None = None):
    """A stage's model on the stage's device in the stage's precision (compute.device, compute.dtype):
    ``(model, tokenizer, info, device)``; logs both, so every job log says how it computed."""
    device = resolve_device(device, rule=rule, gpus=gpus)
    torch_dtype = resolve_dtype(dtype, device)
    model, tokenizer, info = load_model(model_dir, device=device, dtype=torch_dtype)
    log.info("%s loaded on %s in %s (compute.dtype %s)", model_dir, device, dtype_name(torch_dtype), dtype)
    return model, tokenizer, info, device
