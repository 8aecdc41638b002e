"""Snakemake wrapper: a feature-description table (Table 1 or Table 4) from the methods' per-item scores, with
each method's number of distinct answers and exact gold labels on the held-out SAE features."""

import polars as pl

from introspect.config import FEATURE_BASELINES
from introspect.describe import answer_diversity, table1_frame
from introspect.runlog import logged
from introspect.tables import write_table

LABELS = {"sae_judge": "SAE (judge)", "sae_simulator": "SAE (simulator)", "act_simulator": "ACT (simulator)",
          "dact_simulator": "dACT (simulator)", "sae_distinct": "SAE distinct answers", "sae_exact": "SAE exact label"}

with logged(snakemake.log[0]) as log:  # noqa: F821 (injected by Snakemake)
    params = snakemake.params  # noqa: F821
    names = FEATURE_BASELINES | {"selfie": f"SelfIE best of {len(params.selfie_scales)} ({params.target}, untrained)"}
    scores = pl.concat([pl.read_parquet(path).with_columns(row=pl.lit(names.get(method, method)))  # rows' order
                        for method, path in zip(params.methods, snakemake.input.scores)])  # noqa: F821
    scores = scores.filter(pl.col("metric").is_in(params.metrics))
    table = table1_frame(scores.select("row", "item_id", "metric", "value"), metrics=params.metrics)
    items = pl.read_parquet(snakemake.input.eval_items)  # noqa: F821
    diversity = []
    for method, path in zip(params.methods, snakemake.input.predictions):  # noqa: F821
        if method == "selfie":  # several candidates per item (one per scale): no single answer to count
            continue
        counts = answer_diversity(pl.read_parquet(path), items)
        log.info("%s: %d distinct answers, %d exact gold labels for %d held-out SAE features", method,
                 counts["distinct"], counts["exact"], counts["items"])
        diversity.append({"row": names.get(method, method), "sae_distinct": counts["distinct"],
                          "sae_exact": counts["exact"]})
    table = table.join(pl.DataFrame(diversity, schema={"row": pl.String, "sae_distinct": pl.Int64,
                                                      "sae_exact": pl.Int64}), on="row", how="left", maintain_order="left")
    write_table(
        table, snakemake.output.csv, snakemake.output.md,  # noqa: F821
        title=f"{params.title}: describing {params.target}'s features (mean ± SE x 100)",
        notes=[f"LM judge: {params.judge} backend"
               + (f"; simulator: {params.simulator} backend, |Pearson| (as the authors compute it) on the held-out half "
                  "of each item's exemplars" if any(m.endswith("_simulator") for m in params.metrics) else "")
               + ". SelfIE: the best of its scales per item (an upper bound, as in the paper). Bold: not significantly "
               "worse than the best row of the column (paired t-test, p >= 0.05). Distinct answers / exact label: "
               f"how many different descriptions a method gave for the {items.height} held-out SAE features and how "
               "many equal the gold label (case and spaces ignored); a trained explainer that answers the same "
               "thing for every vector has 1."],
        labels=LABELS,
    )
