"""Snakemake wrapper: Table 3, input-ablation (hint) explanations."""

import polars as pl

from introspect.hints import table3_frame
from introspect.runlog import logged
from introspect.tables import write_table

with logged(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    rows = [tuple(r) for r in snakemake.params.rows]  # noqa: F821
    table = table3_frame(rows, [pl.read_parquet(p) for p in snakemake.input.predictions])  # noqa: F821
    write_table(
        table, snakemake.output.csv, snakemake.output.md,  # noqa: F821
        title="Table 3: input-ablation (hint) outcomes explained (exact match, has-changed F1, content match)",
        labels={"group": "explainer", "row": "target (variant)", "exact": "exact match",
                "has_changed_f1": "has-changed F1", "content": "content match"},
        scale=100,
        notes=["Sorted by explainer, as in the paper. mean ± SE x 100 over the test items; bold: not significantly "
               "different from the best entry of the same explainer (paired t-test, p >= 0.05; for F1 on per-item "
               "has-changed correctness).",
               "n_invalid: unparseable outputs (scored as wrong); said_changed: % of outputs predicting a change; "
               "content_changed / content_unchanged: content match (%) on items whose answer did / did not change."],
    )
