"""Snakemake wrapper: fine-tune one explainer on one target's activation-patching data."""

import torch

from introspect.explainers.patching import train_patching_explainer
from introspect.models.loading import resolve_device
from introspect.runlog import logged
from introspect.schemas import read_table

with logged(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    params = snakemake.params  # noqa: F821
    torch.set_num_threads(snakemake.threads)  # noqa: F821
    train_patching_explainer(
        read_table(snakemake.input.dataset, "patching_dataset"),  # noqa: F821
        snakemake.input.model,  # noqa: F821
        snakemake.output[0],  # noqa: F821
        variant=snakemake.wildcards.variant,  # noqa: F821
        target_hidden=params.target_hidden,
        projection=params.projection,
        chat=params.chat,
        train=params.train,
        seed=params.seed,
        device=resolve_device(params.device),
    )
