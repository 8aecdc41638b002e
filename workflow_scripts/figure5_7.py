"""Snakemake wrapper: Figures 5 and 7, the feature explainers' scores over the number of training features."""

import polars as pl

from introspect.names import FEATURE_BASELINES
from introspect.reporting.figures import plot_scaling, summarise
from introspect.runlog import logged

with logged(snakemake.log[0]) as log:  # noqa: F821 (injected by Snakemake)
    params, output = snakemake.params, snakemake.output  # noqa: F821
    summary = summarise({m: pl.read_parquet(p) for m, p in zip(params.methods, snakemake.input)})  # noqa: F821
    labels = {run: f"{run} ({explainer})" for run, explainer in params.explainers.items()}
    labels |= FEATURE_BASELINES | {"selfie": "SelfIE (untrained, best scale)"}
    summary.write_csv(output.csv)
    plot_scaling(summary, ["sae_judge"], output.fig5, f"Figure 5: explaining {params.target}'s held-out SAE features",
                 labels)
    plot_scaling(summary, ["sae_simulator", "act_simulator", "dact_simulator"], output.fig7,
                 f"Figure 7: simulator scores on {params.target}'s features", labels)
    log.info("%s", summary)
