"""Snakemake wrapper: split the sweep by original fact and balance it (appendix E.2; groundtruth.balance)."""

from introspect.groundtruth.balance import BalanceSettings, balance_patching
from introspect.runlog import logged
from introspect.schemas import read_table, write_table

with logged(snakemake.log[0]) as log:  # noqa: F821 (injected by Snakemake)
    params = snakemake.params  # noqa: F821
    sweep = read_table(snakemake.input[0], "patching_sweep")  # noqa: F821
    settings = BalanceSettings(**params.balance, seed=params.seed)
    dataset = balance_patching(sweep, settings)
    for split in ("train", "test"):
        part = dataset.filter(dataset["split"] == split)
        log.info("%s: %d rows, %d changed, %d token types", split, part.height, int(part["has_changed"].sum()),
                 part["token_type"].n_unique())
    write_table(dataset, snakemake.output[0], "patching_dataset")  # noqa: F821
