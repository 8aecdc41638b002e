"""Snakemake wrapper: Table 1 (or Table 4, the same columns on a second target) from the methods' scores."""

import json
from pathlib import Path

import polars as pl

from introspect.names import FEATURE_BASELINES, is_selfie, selfie_interpreter
from introspect.reporting.paper_tables import explainer_recipe, feature_table, write_feature_table
from introspect.runlog import logged

with logged(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    params, inputs, outputs = snakemake.params, snakemake.input, snakemake.output  # noqa: F821
    checkpoint = "explainer.json"  # introspect.explainers.model.CONFIG_FILE (not imported: it would load torch)
    names = FEATURE_BASELINES | {  # 'selfie' reads with the target itself, 'selfie-<model>' with that model
        method: f"SelfIE best of {len(params.selfie_scales)} ({selfie_interpreter(method, params.target)}, untrained)"
        for method in params.methods if is_selfie(method)}
    n_train, recipes = {}, {}
    for run, folder in zip(params.runs, inputs.explainers):  # what each checkpoint was trained on, and how
        saved = json.loads((Path(folder) / checkpoint).read_text())
        n_train[run] = saved["metadata"]["n_train"]
        recipes[run] = explainer_recipe(saved["settings"], **params.run_settings[run])
    for baseline, path in zip(params.banks, inputs.banks):  # the features a nearest-neighbour baseline searched
        n_train[baseline] = json.loads(Path(path).read_text())["n_train"]
    items = pl.read_parquet(inputs.eval_items)
    table = feature_table({m: pl.read_parquet(p) for m, p in zip(params.methods, inputs.scores)},
                          {m: pl.read_parquet(p) for m, p in zip(params.methods, inputs.predictions)},
                          items, names, params.metrics, n_train=n_train, recipes=recipes)
    write_feature_table(table, outputs.csv, outputs.md, title=params.title, target=params.target, judge=params.judge,
                        simulator=params.simulator, metrics=params.metrics, n_items=items.height,
                        correlation=params.correlation)
