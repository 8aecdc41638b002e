"""Snakemake wrapper: nearest-neighbour or gold-label descriptions of the eval sets."""

import polars as pl

from introspect.describe import nearest_neighbour
from introspect.runlog import logged
from introspect.schemas import read_table

with logged(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    baseline = snakemake.wildcards.get("baseline", "gold")  # noqa: F821
    train = None if baseline == "gold" else read_table(snakemake.input.train, "feature_train")  # noqa: F821
    for path, out in zip(snakemake.input.evalsets, snakemake.output):  # noqa: F821
        items = read_table(path, "feature_eval")
        if baseline == "gold":
            if items["label"].null_count():
                raise ValueError(f"{path}: gold labels exist for held-out SAE features only")
            predictions = items["label"].to_list()
        else:
            predictions = nearest_neighbour(train, items, per_layer=baseline == "nn_layer")
        pl.DataFrame({"item_id": items["item_id"], "prediction": predictions}).write_parquet(out)
