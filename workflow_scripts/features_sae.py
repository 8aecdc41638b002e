"""Snakemake wrapper: the SAE of one layer (trained or downloaded), its features and FVU/L0."""

import json
import tempfile
from pathlib import Path

import torch

from introspect.groundtruth.activations import load_cache
from introspect.models.loading import resolve_device
from introspect.runlog import logged
from introspect.groundtruth.sae import features_frame, sae_for_layer
from introspect.schemas import read_table, write_table

with logged(snakemake.log[0]) as log:  # noqa: F821 (injected by Snakemake)
    params = snakemake.params  # noqa: F821
    torch.set_num_threads(snakemake.threads)  # noqa: F821
    layer = int(snakemake.wildcards.layer)  # noqa: F821
    tokens = read_table(snakemake.input.tokens, "feature_tokens")  # noqa: F821
    hidden = load_cache(snakemake.input.activations, tokens)  # noqa: F821
    device = resolve_device(params.device, rule=snakemake.rule, gpus="features")  # noqa: F821
    log.info("SAE training and FVU/L0 evaluation on %s", device)
    out = Path(snakemake.output.sae)  # noqa: F821
    with tempfile.TemporaryDirectory(dir=out.parent if out.parent.exists() else None) as scratch:
        sae, stats = sae_for_layer(params.sae, hidden, tokens, layer, params.seed, scratch, device=device)
    log.info("layer %d SAE: %s", layer, stats)
    sae.save(out, layer=str(layer), backend=params.sae["backend"])
    write_table(features_frame(sae, layer), snakemake.output.features, "feature_vectors")  # noqa: F821
    with open(snakemake.output.stats, "w") as handle:  # noqa: F821
        json.dump(stats, handle, indent=2, sort_keys=True)
