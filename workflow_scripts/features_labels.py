"""Snakemake wrapper: label every feature of one layer (equation 2, or Neuronpedia's explanations)."""

import json
import tempfile
from pathlib import Path

import polars as pl
import torch

from introspect.groundtruth.labels import concepts, label_features, label_stats, neuronpedia_labels
from introspect.groundtruth.exemplars import make_windows
from introspect.scoring.simulators import simulator_device, simulator_from_config
from introspect.runlog import logged
from introspect.schemas import read_table, write_table

with logged(snakemake.log[0]) as log:  # noqa: F821 (injected by Snakemake)
    params = snakemake.params  # noqa: F821
    torch.set_num_threads(snakemake.threads)  # noqa: F821
    layer = int(snakemake.wildcards.layer)  # noqa: F821
    tokens = read_table(snakemake.input.tokens, "feature_tokens")  # noqa: F821
    exemplar_table = read_table(snakemake.input.exemplars, "feature_exemplars")  # noqa: F821
    windows = make_windows(tokens, params.width)
    # The finetuned simulator is loaded and run on compute.device; openai sends `concurrency` requests at once.
    device = simulator_device(params.simulator, params.device, snakemake.rule)  # noqa: F821
    simulator = simulator_from_config(params.simulator, params.cache_dir, device)
    if params.labels["backend"] == "neuronpedia":
        from introspect.sources.downloads import download_neuronpedia_explanations

        out = Path(snakemake.output.labels)  # noqa: F821
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=out.parent) as scratch:
            path = download_neuronpedia_explanations(params.labels["model_id"],
                                                     params.labels["sae_id"].format(layer=layer),
                                                     Path(scratch) / "explanations.parquet")
            labels = neuronpedia_labels(pl.read_parquet(path), exemplar_table, windows, simulator, params.n_top,
                                        params.labels.get("max_scored", 200), params.seed)
    else:
        pool = concepts() if params.labels.get("concepts", True) else []
        labels = label_features(exemplar_table, windows, simulator, pool, params.n_top, params.seed)
    stats = label_stats(labels) | {"layer": layer, "backend": params.labels["backend"],
                                              "simulator": params.simulator["backend"]}
    for name in ("invalid_replies", "http_requests", "cache_hits"):
        if hasattr(simulator, name):
            stats[name] = getattr(simulator, name)
    log.info("labels: %s", stats)
    write_table(labels, snakemake.output.labels, "feature_labels")  # noqa: F821
    with open(snakemake.output.stats, "w") as handle:  # noqa: F821
        json.dump(stats, handle, indent=2, sort_keys=True)
