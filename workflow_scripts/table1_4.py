"""Snakemake wrapper: Table 1 (or Table 4, the same columns on a second target) from the methods' scores."""

import polars as pl

from introspect.names import FEATURE_BASELINES
from introspect.reporting.paper_tables import feature_table, write_feature_table
from introspect.runlog import logged

with logged(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    params, inputs, outputs = snakemake.params, snakemake.input, snakemake.output  # noqa: F821
    names = FEATURE_BASELINES | {"selfie": f"SelfIE best of {len(params.selfie_scales)} ({params.target}, untrained)"}
    items = pl.read_parquet(inputs.eval_items)
    table = feature_table({m: pl.read_parquet(p) for m, p in zip(params.methods, inputs.scores)},
                          {m: pl.read_parquet(p) for m, p in zip(params.methods, inputs.predictions)},
                          items, names, params.metrics)
    write_feature_table(table, outputs.csv, outputs.md, title=params.title, target=params.target, judge=params.judge,
                        simulator=params.simulator, metrics=params.metrics, n_items=items.height)
