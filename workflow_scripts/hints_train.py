"""Snakemake wrapper: fine-tune one explainer on one target's hint outcomes (on the job's ranks)."""

from introspect.explainers.distributed import launch_job
from introspect.explainers.hints import train_hint_explainer
from introspect.models.loading import resolve_device
from introspect.runlog import logged
from introspect.schemas import read_table

with logged(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    params = snakemake.params  # noqa: F821
    launch_job(train_hint_explainer, dict(
        dataset=read_table(snakemake.input.dataset, "hints_dataset"),  # noqa: F821
        model_dir=snakemake.input.model, out_dir=snakemake.output[0],  # noqa: F821
        chat=params.chat, train={**params.train, "compute_dtype": params.dtype}, seed=params.seed,
    ), resolve_device(params.device), snakemake.resources, snakemake.threads)  # noqa: F821
