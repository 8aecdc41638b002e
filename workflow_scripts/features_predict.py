"""Snakemake wrapper: describe the eval sets' vectors with one trained explainer (loaded once)."""

import polars as pl
import torch

from introspect.explainers.features import predict_features
from introspect.models.loading import resolve_device
from introspect.runlog import logged
from introspect.schemas import read_table

with logged(snakemake.log[0]) as log:  # noqa: F821 (injected by Snakemake)
    params = snakemake.params  # noqa: F821
    torch.set_num_threads(snakemake.threads)  # noqa: F821
    items = [read_table(path, "feature_eval") for path in snakemake.input.evalsets]  # noqa: F821
    every = pl.concat(items)
    predictions = predict_features(every, snakemake.input.explainer, params.chat, params.eval["batch_size"],  # noqa: F821
                                   params.eval["max_new_tokens"], params.seed, resolve_device(params.device),
                                   params.dtype)
    log.info("first descriptions: %s", predictions[:5])
    start = 0
    for part, out in zip(items, snakemake.output):  # noqa: F821
        pl.DataFrame({"item_id": part["item_id"], "prediction": predictions[start:start + part.height]}).write_parquet(out)
        start += part.height
