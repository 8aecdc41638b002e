"""Snakemake wrapper: Figure 6, each Table 1 run's scores against its explainer's activation similarity (Table 5)."""

import polars as pl

from introspect.reporting.figures import plot_similarity, similarity_points, summarise
from introspect.runlog import logged

with logged(snakemake.log[0]) as log:  # noqa: F821 (injected by Snakemake)
    params, inputs, output = snakemake.params, snakemake.input, snakemake.output  # noqa: F821
    summary = summarise({m: pl.read_parquet(p) for m, p in zip(params.methods, inputs.scores)})
    points = similarity_points(summary, params.explainers, pl.read_csv(inputs.table5), params.target)
    points.write_csv(output.csv)
    plot_similarity(points, output.png, f"Figure 6: explaining {params.target}'s features vs activation similarity")
    log.info("%s", summary)
