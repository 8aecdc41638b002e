"""Snakemake wrapper: one explainer's explanations of one target's hint test split."""

import torch

from introspect.explainers.hints import predict_hints
from introspect.models.loading import resolve_device
from introspect.runlog import logged
from introspect.schemas import read_table

with logged(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    params = snakemake.params  # noqa: F821
    torch.set_num_threads(snakemake.threads)  # noqa: F821
    predictions = predict_hints(
        read_table(snakemake.input.dataset, "hints_dataset"),  # noqa: F821
        snakemake.input.explainer,  # noqa: F821
        variant=snakemake.wildcards.variant,  # noqa: F821
        chat=params.chat,
        evaluation=params.eval,
        seed=params.seed,
        device=resolve_device(params.device),
        dtype=params.dtype,
    )
    predictions.write_parquet(snakemake.output[0])  # noqa: F821
