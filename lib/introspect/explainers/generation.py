"""Greedy generation of explanations with a (trained or untrained) explainer, in length-sorted batches."""

from __future__ import annotations

import torch

from introspect.explainers.model import VectorExplainer
from introspect.explainers.training import ExplainerData


@torch.no_grad()
def predict(explainer: VectorExplainer, data: ExplainerData, batch_size: int = 16,
            max_new_tokens: int = 24) -> list[str]:
    """Greedy explanations for every example (left-padded batches, longest first to waste little padding)."""
    explainer.eval()
    order = sorted(range(len(data)), key=lambda i: -len(data.items[i].input_ids))
    out: dict[int, str] = {}
    pad = explainer.tokenizer.pad_token_id
    for start in range(0, len(order), batch_size):
        index = order[start:start + batch_size]
        batch = data.batch(index, pad, left_pad=True).to(explainer.device)
        for i, text in zip(index, explainer.generate(batch, max_new_tokens=max_new_tokens)):
            out[i] = text
    return [out[i] for i in range(len(data))]
