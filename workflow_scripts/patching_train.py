"""Snakemake wrapper: fine-tune one explainer on one target's activation-patching data (on the job's ranks)."""

from introspect.explainers.distributed import launch_job
from introspect.explainers.patching import train_patching_explainer
from introspect.models.loading import resolve_device
from introspect.runlog import logged
from introspect.schemas import read_table

with logged(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    params = snakemake.params  # noqa: F821
    launch_job(train_patching_explainer, dict(
        dataset=read_table(snakemake.input.dataset, "patching_dataset"),  # noqa: F821
        model_dir=snakemake.input.model, out_dir=snakemake.output[0],  # noqa: F821
        variant=snakemake.wildcards.variant,  # noqa: F821
        target_hidden=params.target_hidden, projection=params.projection, chat=params.chat,
        train={**params.train, "compute_dtype": params.dtype},
        seed=params.seed,
    ), resolve_device(params.device), snakemake.resources, snakemake.threads)  # noqa: F821
