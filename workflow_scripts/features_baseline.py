"""Snakemake wrapper: nearest-neighbour or gold-label descriptions of the eval sets (and the NN bank's size)."""

import json

import polars as pl
import torch

from introspect.explainers.baselines import nearest_neighbour, nn_bank
from introspect.names import split_scaled
from introspect.runlog import logged
from introspect.schemas import read_table
from introspect.tensorfiles import RowFile

with logged(snakemake.log[0]) as log:  # noqa: F821 (injected by Snakemake)
    params = snakemake.params  # noqa: F821
    torch.set_num_threads(snakemake.threads)  # noqa: F821
    baseline, _ = split_scaled(snakemake.wildcards.get("baseline", "gold"))  # noqa: F821
    bank = None
    if baseline != "gold":  # the rows the table's explainers train on (a scaling point: its per-layer sample)
        pool = read_table(snakemake.input.train, "feature_train")  # noqa: F821
        bank = nn_bank(pool, params.max_train, params.n_per_layer, params.seed)
        per_layer = {str(k): v for k, v in sorted(bank.group_by("layer").len().rows())}
        log.info("bank: %d of the %d training features (per layer %s)", bank.height, pool.height, per_layer)
        summary = {"n_train": bank.height, "n_pool": pool.height, "per_layer": per_layer,
                   "max_train": params.max_train, "n_per_layer": params.n_per_layer, "seed": params.seed}
        with open(snakemake.output.bank, "w") as f:  # noqa: F821
            json.dump(summary, f, indent=2, sort_keys=True)
    for path, out in zip(snakemake.input.evalsets, snakemake.output.predictions):  # noqa: F821
        items = read_table(path, "feature_eval")
        if baseline == "gold":
            if items["label"].null_count():
                raise ValueError(f"{path}: gold labels exist for held-out SAE features only")
            predictions = items["label"].to_list()
        else:
            predictions = nearest_neighbour(bank, RowFile(snakemake.input.vectors), items,  # noqa: F821
                                            per_layer=baseline == "nn_layer", budget_mb=params.budget_mb)
        pl.DataFrame({"item_id": items["item_id"], "prediction": predictions}).write_parquet(out)
