"""Snakemake wrapper: Table 2, activation-patching explanations."""

import polars as pl

from introspect.reporting.paper_tables import table2_frame, write_causal_table
from introspect.runlog import logged

with logged(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    rows = [tuple(r) for r in snakemake.params.rows]  # noqa: F821
    table = table2_frame(rows, [pl.read_parquet(p) for p in snakemake.input.predictions])  # noqa: F821
    write_causal_table(table, snakemake.output.csv, snakemake.output.md, "table2")  # noqa: F821
