"""Snakemake wrapper: one row per (target, layer): SAE FVU/L0/dead share, exemplar and label statistics."""

import json

import polars as pl

from introspect.runlog import logged
from introspect.reporting.tables import write_table

with logged(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    rows = []
    inputs = snakemake.input  # noqa: F821
    for (target, layer), sae_path, ex_path, label_path in zip(snakemake.params.rows, inputs.sae,  # noqa: F821
                                                              inputs.exemplars, inputs.labels):
        with open(sae_path) as a, open(ex_path) as b, open(label_path) as c:
            sae, ex, labels = json.load(a), json.load(b), json.load(c)
        rows.append({"target": target, "layer": layer, "sae": sae["backend"], "features": sae["n_features"],
                     "fvu": sae["fvu"], "l0": sae["l0"], "dead_fraction": sae["dead_fraction"],
                     "train_tokens": sae["train_tokens"], "eval_tokens": sae["eval_tokens"],
                     "dropped_no_activation": ex["dropped_no_activation"], "labelled": labels["labelled"],
                     "label_score": labels["mean_score_chosen"],
                     "random_candidate_score": labels["mean_score_random_candidate"],
                     "label_check_score": labels["mean_check_score_chosen"],
                     "random_candidate_check_score": labels["mean_check_score_random_candidate"]})
    write_table(
        pl.DataFrame(rows), snakemake.output.csv, snakemake.output.md,  # noqa: F821
        title="SAE features per target layer: reconstruction and labels",
        notes=["fvu / l0 / dead_fraction on held-out eval tokens. label_score: mean simulator score of the chosen "
               "labels on the exemplars that chose them; label_check_score: on the other half of the exemplars; "
               "random_candidate_*: a random candidate of the same feature on the same exemplars."],
    )
