"""Snakemake wrapper: Table 7, changed / unchanged counts of the hint data per target and split, and the switch rate."""

from introspect.reporting.paper_tables import table7
from introspect.runlog import logged
from introspect.schemas import read_table
from introspect.reporting.tables import write_table

with logged(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    datasets = {t: read_table(p, "hints_dataset") for t, p in zip(snakemake.params.targets, snakemake.input.datasets)}  # noqa: F821
    write_table(
        table7(datasets), snakemake.output.csv, snakemake.output.md,  # noqa: F821
        title="Table 7: input-ablation (hint) data per target and split",
        notes=["changed / unchanged: rows of the balanced split whose hinted answer differs from / equals the "
               "unhinted one (the paper's Table 7 columns).",
               "hint ≠ unhinted: rows whose hint letter is not the unhinted answer; switched: those of them whose "
               "hinted answer is the hint letter; switch rate = switched / hint ≠ unhinted (a hint equal to the "
               "unhinted answer cannot switch it and is left out)."],
        labels={"hint_differs": "hint ≠ unhinted", "switch_rate": "switch rate"},
    )
