"""Snakemake wrapper: hold out n_test labelled features per layer; write a readable sample of labels."""

import json

from introspect.groundtruth.evalsets import LayerFiles, sample_features, sample_markdown, sample_rows, split_feature_files
from introspect.groundtruth.exemplars import make_windows
from introspect.runlog import logged
from introspect.schemas import read_table, write_table

with logged(snakemake.log[0]) as log:  # noqa: F821 (injected by Snakemake)
    params = snakemake.params  # noqa: F821
    inputs = snakemake.input  # noqa: F821
    files = [LayerFiles(*paths) for paths in zip(inputs.labels, inputs.features, inputs.exemplars)]
    train, test = split_feature_files(files, params.split["n_test"], params.seed, snakemake.output.vectors,  # noqa: F821
                                      budget_mb=params.budget_mb)
    write_table(train, snakemake.output.train, "feature_train")  # noqa: F821
    write_table(test, snakemake.output.test, "feature_eval")  # noqa: F821
    windows = make_windows(read_table(inputs.tokens, "feature_tokens"), params.width)
    labels, exemplar_rows = sample_rows(files, sample_features(files, params.split.get("sample", 20), params.seed))
    with open(snakemake.output.sample, "w") as out:  # noqa: F821
        out.write(sample_markdown(labels, exemplar_rows, windows))
    stats = {"train": train.height, "test": test.height,
             "train_by_layer": {str(k): v for k, v in train.group_by("layer").len().sort("layer").iter_rows()},
             "test_by_layer": {str(k): v for k, v in test.group_by("layer").len().sort("layer").iter_rows()}}
    log.info("split: %s", stats)
    with open(snakemake.output.stats, "w") as out:  # noqa: F821
        json.dump(stats, out, indent=2, sort_keys=True)
