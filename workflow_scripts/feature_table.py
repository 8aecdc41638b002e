"""Snakemake wrapper: a feature-description table (Table 1 or Table 4) from the methods' per-item scores."""

import polars as pl

from introspect.describe import TABLE1_METRICS, table1_frame
from introspect.runlog import logged
from introspect.tables import write_table

LABELS = {"sae_judge": "SAE (judge)", "sae_simulator": "SAE (simulator)", "act_simulator": "ACT (simulator)",
          "dact_simulator": "dACT (simulator)"}

with logged(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    params = snakemake.params  # noqa: F821
    names = {"nn_all": "NN-all", "nn_layer": "NN-layer", "gold": "gold SAE labels",
             "selfie": f"SelfIE best of {len(params.selfie_scales)} ({params.target}, untrained)"}
    scores = pl.concat([pl.read_parquet(path).with_columns(row=pl.lit(names.get(method, method)))  # rows' order
                        for method, path in zip(params.methods, snakemake.input)])  # noqa: F821
    scores = scores.filter(pl.col("metric").is_in(params.metrics))
    table = table1_frame(scores.select("row", "item_id", "metric", "value"), metrics=params.metrics)
    write_table(
        table, snakemake.output.csv, snakemake.output.md,  # noqa: F821
        title=f"{params.title}: describing {params.target}'s features (mean ± SE x 100)",
        notes=[f"LM judge: {params.judge} backend"
               + (f"; simulator: {params.simulator} backend, |Pearson| (as the authors compute it) on the held-out half "
                  "of each item's exemplars" if any(m.endswith("_simulator") for m in params.metrics) else "")
               + ". SelfIE: the best of its scales per item (an upper bound, as in the paper). Bold: not significantly "
               "worse than the best row of the column (paired t-test, p >= 0.05)."],
        labels={m: LABELS[m] for m in TABLE1_METRICS},
    )
