"""Snakemake wrapper: Figure 6, each Table 1 run's scores against its own activation similarity to the target."""

import json

import polars as pl

from introspect.reporting.figures import plot_similarity, similarity_points, summarise
from introspect.reporting.paper_tables import table5
from introspect.runlog import logged

with logged(snakemake.log[0]) as log:  # noqa: F821 (injected by Snakemake)
    params, inputs, output = snakemake.params, snakemake.input, snakemake.output  # noqa: F821
    summary = summarise({m: pl.read_parquet(p) for m, p in zip(params.methods, inputs.scores)})
    entries = [json.loads(open(path).read()) for path in inputs.similarities]
    similarities = table5(entries).with_columns(pl.Series("run", [e["run"] for e in entries]))
    points = similarity_points(summary, similarities)
    points.write_csv(output.csv)
    plot_similarity(points, output.png, f"Figure 6: explaining {params.target}'s features vs activation similarity "
                    "through each run's Pi_l")
    log.info("%s", points)
