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
        notes=["Percent, averaged over the target's layers. dot_product_similarity: mean cosine of Pi_l h^M (the "
               "target's activation mapped into the explainer's space) and h^E at aligned tokens; "
               "sae_pattern_similarity: Pearson correlation over the tokens of a feature's top exemplars of "
               "<h^E, Pi_l v> and <h^M, v> (appendix B.2).",
               "Pi_l: the identity when the hidden sizes match (projection none); else the pre-trained projection "
               "(target layer -> explainer layer at the same relative depth, least squares without a bias on the "
               "corpus's train sequences, measured on eval sequences), as the paper's Llama-3.1-70B row. Figure 6 "
               "measures each run through its own trained Pi_l instead (results/figure6.csv).",
               "Layers: target layer -> explainer layer at the same relative depth."],
    )
