"""Snakemake wrapper: Figures 5 and 7 (scaling curves) or Figure 6 (score vs activation similarity)."""

import polars as pl

from introspect.config import FEATURE_BASELINES
from introspect.figures import plot_scaling, plot_similarity, similarity_points, summarise
from introspect.runlog import logged

with logged(snakemake.log[0]) as log:  # noqa: F821 (injected by Snakemake)
    params = snakemake.params  # noqa: F821
    paths = snakemake.input.scores if params.kind == "similarity" else snakemake.input  # noqa: F821
    summary = summarise({m: pl.read_parquet(p) for m, p in zip(params.methods, paths)})
    if params.kind == "similarity":
        points = similarity_points(summary, params.explainers, pl.read_csv(snakemake.input.table5), params.target)  # noqa: F821
        points.write_csv(snakemake.output.csv)  # noqa: F821
        plot_similarity(points, snakemake.output.png,  # noqa: F821
                        f"Figure 6: explaining {params.target}'s features vs activation similarity")
    else:
        labels = {run: f"{run} ({explainer})" for run, explainer in params.explainers.items()}
        labels |= FEATURE_BASELINES | {"selfie": "SelfIE (untrained, best scale)"}
        summary.write_csv(snakemake.output.csv)  # noqa: F821
        plot_scaling(summary, ["sae_judge"], snakemake.output.fig5,  # noqa: F821
                     f"Figure 5: explaining {params.target}'s held-out SAE features", labels)
        plot_scaling(summary, ["sae_simulator", "act_simulator", "dact_simulator"], snakemake.output.fig7,  # noqa: F821
                     f"Figure 7: simulator scores on {params.target}'s features", labels)
    log.info("%s", summary)
