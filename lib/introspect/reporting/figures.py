"""Figures 5-7 of the paper as PNG files (matplotlib, no display needed).

- Figure 5: LM judge on held-out SAE features vs training features per layer (log x), one line per method
  (self / other explainer runs, NN baselines), error bars = SE; SelfIE (untrained) as a flat band.
- Figure 6: explainer score vs activation similarity to the target (Table 5), one panel per similarity
  measure, one series per (metric, eval set).
- Figure 7: as Figure 5 with the simulator score on the three eval sets (SAE, ACT, dACT), one panel each.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import polars as pl

from introspect.names import split_scaled
from introspect.reporting.statistics import mean_se

METRIC_LABELS = {"sae_judge": "SAE (LM judge)", "sae_simulator": "SAE (simulator)",
                 "act_simulator": "ACT (simulator)", "dact_simulator": "dACT (simulator)"}


def summarise(scores: Mapping[str, pl.DataFrame]) -> pl.DataFrame:
    """(method, n_train, metric, mean, se) x 100 from each method's per-item scores (item_id, metric, value);
    `method` is the base name of a scaling point (``self@n100`` -> ``self``, 100), n_train null otherwise."""
    rows = []
    for name, frame in scores.items():
        base, n = split_scaled(name)
        for metric in frame["metric"].unique(maintain_order=True).to_list():
            mean, se = mean_se(frame.filter(pl.col("metric") == metric)["value"].to_numpy())
            rows.append({"method": base, "n_train": n, "metric": metric, "mean": 100 * mean, "se": 100 * se})
    return pl.DataFrame(rows, schema={"method": pl.String, "n_train": pl.Int64, "metric": pl.String,
                                      "mean": pl.Float64, "se": pl.Float64})


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_scaling(summary: pl.DataFrame, metrics: Sequence[str], out: str | Path, title: str,
                 labels: Mapping[str, str] | None = None) -> None:
    """One panel per metric: mean +- SE vs n_train per layer (log x) for every scaled method; methods without
    n_train (SelfIE) are drawn as a horizontal line with a SE band."""
    plt = _pyplot()
    labels = labels or {}
    # one panel is narrower than the figure's title: at least 6.4 inches wide
    fig, axes = plt.subplots(1, len(metrics), figsize=(max(6.4, 4.6 * len(metrics)), 4.0), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        part = summary.filter(pl.col("metric") == metric)
        scaled = part.filter(pl.col("n_train").is_not_null())
        for method in scaled["method"].unique(maintain_order=True).to_list():
            line = scaled.filter(pl.col("method") == method).sort("n_train")
            ax.errorbar(line["n_train"].to_numpy(), line["mean"].to_numpy(), yerr=line["se"].to_numpy(),
                        marker="o", capsize=3, label=labels.get(method, method))
        for flat in part.filter(pl.col("n_train").is_null()).iter_rows(named=True):
            ax.axhline(flat["mean"], linestyle="--", color="grey", label=labels.get(flat["method"], flat["method"]))
            ax.axhspan(flat["mean"] - flat["se"], flat["mean"] + flat["se"], color="grey", alpha=0.15)
        ax.set_xscale("log")
        sizes = sorted(set(scaled["n_train"].to_list()))
        if sizes:
            ax.set_xticks(sizes, [str(n) for n in sizes])
            ax.minorticks_off()
        ax.set_xlabel("training features per layer")
        ax.set_ylabel(f"{METRIC_LABELS.get(metric, metric)} x 100")
        ax.set_title(METRIC_LABELS.get(metric, metric))
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=120, bbox_inches="tight")  # nothing (title, legend) cut at the edges
    plt.close(fig)


def plot_similarity(points: pl.DataFrame, out: str | Path, title: str) -> None:
    """Figure 6 from (run, explainer, sae_pattern_similarity, dot_product_similarity, metric, mean, se) rows:
    left panel x = SAE activation-pattern similarity, right x = dot-product similarity; y = score x 100."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), squeeze=False)
    panels = (("sae_pattern_similarity", "SAE activation-pattern similarity (%)"),
              ("dot_product_similarity", "dot-product (cosine) similarity (%)"))
    from matplotlib.lines import Line2D

    metrics = points["metric"].unique(maintain_order=True).to_list()
    runs = points["run"].unique(maintain_order=True).to_list()
    colours = {m: f"C{i}" for i, m in enumerate(metrics)}
    markers = {r: "osD^vP*X"[i % 8] for i, r in enumerate(runs)}
    for ax, (column, xlabel) in zip(axes[0], panels):
        for row in points.iter_rows(named=True):
            ax.errorbar(row[column], row["mean"], yerr=row["se"], marker=markers[row["run"]],
                        color=colours[row["metric"]], capsize=3, linestyle="none")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("explainer score x 100")
        ax.grid(alpha=0.3)
    handles = [Line2D([], [], color=colours[m], marker="o", linestyle="none", label=METRIC_LABELS.get(m, m))
               for m in metrics]
    handles += [Line2D([], [], color="black", marker=markers[r], linestyle="none", label=r) for r in runs]
    axes[0][1].legend(handles=handles, fontsize=8, loc="best")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=120, bbox_inches="tight")  # nothing (title, legend) cut at the edges
    plt.close(fig)


def similarity_points(summary: pl.DataFrame, similarities: pl.DataFrame) -> pl.DataFrame:
    """Join each run's scores with its own activation similarity to the target: `similarities` has one row per
    run (``paper_tables.table5`` of the runs' similarity records, plus a ``run`` column), each measured through
    that run's trained Pi_l, so two runs of one explainer model get their own x."""
    scored = summary.filter(pl.col("n_train").is_null()).rename({"method": "run"})
    out = scored.join(similarities.select("run", "explainer", "projection", "sae_pattern_similarity",
                                          "dot_product_similarity"), on="run")
    missing = sorted(set(scored["run"].to_list()) - set(out["run"].to_list()))
    if missing:
        raise ValueError(f"no activation similarity for the run(s) {missing}: each run needs "
                         "results/<target>/features/similarity/runs/<run>.json")
    return out.select("run", "explainer", "projection", "sae_pattern_similarity", "dot_product_similarity",
                      "metric", "mean", "se")
