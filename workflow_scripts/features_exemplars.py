"""Snakemake wrapper: top-activating and random eval windows of every SAE feature of one layer."""

import json

import torch

from introspect.groundtruth.activations import load_cache
from introspect.groundtruth.exemplars import ExemplarSettings, sae_exemplars
from introspect.models.loading import resolve_device
from introspect.runlog import logged
from introspect.groundtruth.sae import SAE
from introspect.schemas import read_table, write_table

with logged(snakemake.log[0]) as log:  # noqa: F821 (injected by Snakemake)
    params = snakemake.params  # noqa: F821
    torch.set_num_threads(snakemake.threads)  # noqa: F821
    layer = int(snakemake.wildcards.layer)  # noqa: F821
    tokens = read_table(snakemake.input.tokens, "feature_tokens")  # noqa: F821
    hidden = load_cache(snakemake.input.activations, tokens)  # noqa: F821
    device = resolve_device(params.device, rule=snakemake.rule, gpus="features")  # noqa: F821
    log.info("encoding exemplar activations on %s", device)
    sae = SAE.load(snakemake.input.sae)  # noqa: F821
    frame, stats = sae_exemplars(hidden, tokens, sae, layer, ExemplarSettings(**params.exemplars), params.seed,
                                 device=device)
    log.info("exemplars: %s", stats)
    write_table(frame, snakemake.output.exemplars, "feature_exemplars")  # noqa: F821
    with open(snakemake.output.stats, "w") as handle:  # noqa: F821
        json.dump(stats, handle, indent=2, sort_keys=True)
