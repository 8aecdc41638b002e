"""Snakemake wrapper: fine-tune one explainer on one target's hint outcomes."""

import torch

from introspect.explainers.hints import train_hint_explainer
from introspect.models.loading import resolve_device
from introspect.runlog import logged
from introspect.schemas import read_table

with logged(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    params = snakemake.params  # noqa: F821
    torch.set_num_threads(snakemake.threads)  # noqa: F821
    train_hint_explainer(
        read_table(snakemake.input.dataset, "hints_dataset"),  # noqa: F821
        snakemake.input.model,  # noqa: F821
        snakemake.output[0],  # noqa: F821
        chat=params.chat,
        train=params.train,
        seed=params.seed,
        device=resolve_device(params.device),
    )
