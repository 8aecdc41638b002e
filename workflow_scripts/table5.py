"""Snakemake wrapper: Table 5 (activation similarity of each explainer model to each target)."""

import json

from introspect.runlog import logged
from introspect.reporting.paper_tables import table5
from introspect.reporting.tables import write_table

with logged(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    entries = []
    for path in snakemake.input:  # noqa: F821
        with open(path) as handle:
            entries.append(json.load(handle))
    write_table(
        table5(entries), snakemake.output.csv, snakemake.output.md,  # noqa: F821
        title="Table 5: activation similarity of each explainer model to the target",
        notes=["Percent, averaged over the target's layers. dot_product_similarity: mean cosine of the explainer's "
               "and the target's activations at aligned tokens (explainer mapped into the target's space by least "
               "squares, fitted on other sequences, when the hidden sizes differ); sae_pattern_similarity: Pearson "
               "correlation over the tokens of a feature's top exemplars of <h, v> for both models (appendix B.2).",
               "Layers: target layer -> explainer layer at the same relative depth."],
    )
