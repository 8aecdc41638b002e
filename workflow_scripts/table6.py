"""Snakemake wrapper: Table 6, the activation-patching dataset statistics."""

from introspect.reporting.paper_tables import table6
from introspect.runlog import logged
from introspect.schemas import read_table
from introspect.reporting.tables import write_table

with logged(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    frames = {t: read_table(p, "patching_dataset")
              for t, p in zip(snakemake.params.targets, snakemake.input.datasets)}  # noqa: F821
    write_table(table6(frames), snakemake.output.csv, snakemake.output.md,  # noqa: F821
                title="Table 6: activation-patching data per split, token type, layer chunk and has-changed",
                notes=["Counts after balancing (rows = interventions): split by original fact, each (token type, "
                       "layer chunk) cell capped, has-changed balanced over each split (appendix E.2). Token "
                       "types of appendix E.2; any other token is its own type."])
