"""Snakemake wrapper: nearest-neighbour or gold-label descriptions of the eval sets."""

import polars as pl
import torch

from introspect.names import split_scaled
from introspect.explainers.baselines import nearest_neighbour, per_layer_sample
from introspect.runlog import logged
from introspect.schemas import read_table
from introspect.tensorfiles import RowFile

with logged(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    params = snakemake.params  # noqa: F821
    torch.set_num_threads(snakemake.threads)  # noqa: F821
    baseline, _ = split_scaled(snakemake.wildcards.get("baseline", "gold"))  # noqa: F821
    train = None if baseline == "gold" else read_table(snakemake.input.train, "feature_train")  # noqa: F821
    if train is not None and params.n_per_layer is not None:  # a scaling point
        train = per_layer_sample(train, params.n_per_layer, params.seed)
    for path, out in zip(snakemake.input.evalsets, snakemake.output):  # noqa: F821
        items = read_table(path, "feature_eval")
        if baseline == "gold":
            if items["label"].null_count():
                raise ValueError(f"{path}: gold labels exist for held-out SAE features only")
            predictions = items["label"].to_list()
        else:
            predictions = nearest_neighbour(train, RowFile(snakemake.input.vectors), items,  # noqa: F821
                                            per_layer=baseline == "nn_layer", budget_mb=params.budget_mb)
        pl.DataFrame({"item_id": items["item_id"], "prediction": predictions}).write_parquet(out)
