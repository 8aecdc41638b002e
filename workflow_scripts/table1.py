"""Snakemake wrapper: Table 1 (explainers and baselines on held-out SAE, ACT and dACT vectors)."""

import polars as pl

from introspect.describe import table1_frame
from introspect.runlog import logged
from introspect.tables import write_table

with logged(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    params = snakemake.params  # noqa: F821
    scores = pl.concat([pl.read_parquet(path).with_columns(row=pl.lit(method))  # inputs are in the rows' order
                        for method, path in zip(params.methods, snakemake.input)])  # noqa: F821
    table = table1_frame(scores.select("row", "item_id", "metric", "value"))
    write_table(
        table, snakemake.output.csv, snakemake.output.md,  # noqa: F821
        title=f"Table 1: describing {params.target}'s features (mean ± SE x 100)",
        notes=[f"LM judge: {params.judge} backend; simulator: {params.simulator} backend. Simulator scores are |Pearson| (as the "
               "authors compute them) on the held-out half of each item's exemplars. Bold: not significantly worse than the best row of the "
               "column (paired t-test, p >= 0.05)."],
        labels={"sae_judge": "SAE (judge)", "sae_simulator": "SAE (simulator)", "act_simulator": "ACT (simulator)",
                "dact_simulator": "dACT (simulator)"},
    )
