"""Snakemake wrapper: Table 3, input-ablation (hint) explanations."""

import polars as pl

from introspect.reporting.paper_tables import write_causal_table
from introspect.reporting.paper_tables import table3_frame
from introspect.runlog import logged

with logged(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    rows = [tuple(r) for r in snakemake.params.rows]  # noqa: F821
    table = table3_frame(rows, [pl.read_parquet(p) for p in snakemake.input.predictions])  # noqa: F821
    write_causal_table(table, snakemake.output.csv, snakemake.output.md, "table3")  # noqa: F821
