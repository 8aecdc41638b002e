"""Snakemake wrapper: one explainer's explanations of one target's patching test split."""

import torch

from introspect.explainers.patching import predict_patching
from introspect.models.loading import resolve_device
from introspect.runlog import logged
from introspect.schemas import read_table

with logged(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    params = snakemake.params  # noqa: F821
    torch.set_num_threads(snakemake.threads)  # noqa: F821
    predictions = predict_patching(
        read_table(snakemake.input.dataset, "patching_dataset"),  # noqa: F821
        snakemake.input.explainer,  # noqa: F821
        variant=snakemake.wildcards.variant,  # noqa: F821
        target_hidden=params.target_hidden,
        chat=params.chat,
        evaluation=params.eval,
        seed=params.seed,
        device=resolve_device(params.device),
        dtype=params.dtype,
    )
    predictions.write_parquet(snakemake.output[0])  # noqa: F821
