"""Snakemake wrapper: split the sweep by pair and balance has-changed within (token type, chunk) cells."""

from introspect.groundtruth.balance import BalanceSettings, split_and_balance
from introspect.runlog import logged
from introspect.schemas import read_table, write_table

with logged(snakemake.log[0]) as log:  # noqa: F821 (injected by Snakemake)
    params = snakemake.params  # noqa: F821
    sweep = read_table(snakemake.input[0], "patching_sweep")  # noqa: F821
    settings = BalanceSettings(**params.balance, seed=params.seed)
    dataset = split_and_balance(sweep, "pair_id", ["token_type", "chunk"], "has_changed", settings)
    for split in ("train", "test"):
        part = dataset.filter(dataset["split"] == split)
        log.info("%s: %d rows, %d changed", split, part.height, int(part["has_changed"].sum()))
    write_table(dataset, snakemake.output[0], "patching_dataset")  # noqa: F821
