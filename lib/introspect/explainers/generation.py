"""Greedy generation of explanations with a (trained or untrained) explainer, in length-sorted batches."""

from __future__ import annotations

import logging

import torch

from introspect.explainers.model import VectorExplainer
from introspect.explainers.training import ExplainerData
from introspect.models.precision import autocast, dtype_name, resolve_dtype

log = logging.getLogger(__name__)


@torch.no_grad()
def predict(explainer: VectorExplainer, data: ExplainerData, batch_size: int = 16,
            max_new_tokens: int = 24, dtype: str = "float32") -> list[str]:
    """Greedy explanations for every example (left-padded batches, longest first to waste little padding).

    `dtype` is compute.dtype (auto, float32, bfloat16): bfloat16 generates under autocast."""
    explainer.eval()
    precision = resolve_dtype(dtype, explainer.device)
    log.info("generating %d explanations on %s in %s", len(data), explainer.device, dtype_name(precision))
    order = sorted(range(len(data)), key=lambda i: -len(data.items[i].input_ids))
    out: dict[int, str] = {}
    pad = explainer.tokenizer.pad_token_id
    for start in range(0, len(order), batch_size):
        index = order[start:start + batch_size]
        batch = data.batch(index, pad, left_pad=True).to(explainer.device)
        with autocast(precision, explainer.device):
            texts = explainer.generate(batch, max_new_tokens=max_new_tokens)
        for i, text in zip(index, texts):
            out[i] = text
    return [out[i] for i in range(len(data))]
