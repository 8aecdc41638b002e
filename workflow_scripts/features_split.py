"""Snakemake wrapper: hold out n_test labelled features per layer; write a readable sample of labels."""

import json

import polars as pl

from introspect.groundtruth.exemplars import make_windows
from introspect.groundtruth.evalsets import sample_markdown, split_features
from introspect.runlog import logged
from introspect.schemas import read_table, write_table

with logged(snakemake.log[0]) as log:  # noqa: F821 (injected by Snakemake)
    params = snakemake.params  # noqa: F821
    inputs = snakemake.input  # noqa: F821
    trains, tests, all_labels, all_exemplars = [], [], [], []
    for labels_path, features_path, exemplars_path in zip(inputs.labels, inputs.features, inputs.exemplars):
        labels = read_table(labels_path, "feature_labels")
        exemplar_table = read_table(exemplars_path, "feature_exemplars")
        layer = int(labels["layer"][0]) if labels.height else -1
        train, test = split_features(labels, read_table(features_path, "feature_vectors"), exemplar_table,
                                     params.split["n_test"], params.seed + layer)
        trains.append(train)
        tests.append(test)
        all_labels.append(labels)
        all_exemplars.append(exemplar_table)
    train, test = pl.concat(trains), pl.concat(tests)
    write_table(train, snakemake.output.train, "feature_train")  # noqa: F821
    write_table(test, snakemake.output.test, "feature_eval")  # noqa: F821
    windows = make_windows(read_table(inputs.tokens, "feature_tokens"), params.width)
    with open(snakemake.output.sample, "w") as out:  # noqa: F821
        out.write(sample_markdown(pl.concat(all_labels), pl.concat(all_exemplars), windows,
                                  params.split.get("sample", 20), params.seed))
    stats = {"train": train.height, "test": test.height,
             "train_by_layer": {str(k): v for k, v in train.group_by("layer").len().sort("layer").iter_rows()},
             "test_by_layer": {str(k): v for k, v in test.group_by("layer").len().sort("layer").iter_rows()}}
    log.info("split: %s", stats)
    with open(snakemake.output.stats, "w") as out:  # noqa: F821
        json.dump(stats, out, indent=2, sort_keys=True)
