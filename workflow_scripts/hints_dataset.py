"""Snakemake wrapper: split the hint runs by question and balance has-changed within each split."""

from introspect.groundtruth.balance import BalanceSettings, split_and_balance
from introspect.runlog import logged
from introspect.schemas import read_table, write_table

with logged(snakemake.log[0]) as log:  # noqa: F821 (injected by Snakemake)
    params = snakemake.params  # noqa: F821
    runs = read_table(snakemake.input[0], "hints_runs")  # noqa: F821
    settings = BalanceSettings(**params.balance, max_per_cell=max(runs.height, 1), seed=params.seed)
    dataset = split_and_balance(runs, "question_id", ["split"], "has_changed", settings)
    for split in ("train", "test"):
        part = dataset.filter(dataset["split"] == split)
        log.info("%s: %d rows, %d changed", split, part.height, int(part["has_changed"].sum()))
    write_table(dataset, snakemake.output[0], "hints_dataset")  # noqa: F821
