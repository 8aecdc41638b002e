"""Snakemake wrapper: fine-tune one feature-description explainer run (on the job's ranks)."""

from safetensors.torch import load_file

from introspect.explainers.baselines import per_layer_sample
from introspect.explainers.distributed import launch_job
from introspect.explainers.features import train_feature_explainer
from introspect.models.loading import resolve_device
from introspect.runlog import logged
from introspect.schemas import read_table

with logged(snakemake.log[0]) as log:  # noqa: F821 (injected by Snakemake)
    params = snakemake.params  # noqa: F821
    train = read_table(snakemake.input.train, "feature_train")  # noqa: F821
    if params.n_per_layer is not None:  # a scaling point of Figures 5 and 7
        train = per_layer_sample(train, params.n_per_layer, params.sample_seed)
        log.info("scaling point: %d training features per layer (%d in all)", params.n_per_layer, train.height)
    weights = None
    if params.projection == "pretrained":
        weights = {int(k): v for k, v in load_file(snakemake.input.projection).items()}  # noqa: F821
    losses = launch_job(train_feature_explainer, dict(
        train=train, model_dir=snakemake.input.model, out_dir=snakemake.output[0],  # noqa: F821
        target_hidden=params.target_hidden, projection=params.projection, chat=params.chat,
        settings={**params.train, "compute_dtype": params.dtype}, seed=params.seed, projection_weights=weights,
        target_model=params.target_model,
        vectors=snakemake.input.vectors,  # noqa: F821
    ), resolve_device(params.device), snakemake.resources, snakemake.threads)  # noqa: F821
    log.info("first/last loss %.3f / %.3f over %d steps", losses[0], losses[-1], len(losses))
