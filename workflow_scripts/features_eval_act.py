"""Snakemake wrapper: the ACT eval set (full activations at sampled eval tokens) with exemplars."""

import torch

from introspect.groundtruth.activations import load_cache
from introspect.groundtruth.exemplars import ExemplarSettings
from introspect.groundtruth.evalsets import act_eval_set
from introspect.runlog import logged
from introspect.schemas import read_table, write_table

with logged(snakemake.log[0]) as log:  # noqa: F821 (injected by Snakemake)
    params = snakemake.params  # noqa: F821
    torch.set_num_threads(snakemake.threads)  # noqa: F821
    tokens = read_table(snakemake.input.tokens, "feature_tokens")  # noqa: F821
    paths = dict(zip(params.layers, snakemake.input.activations))  # noqa: F821
    frame = act_eval_set(params.layers, lambda layer: load_cache(paths[layer], tokens), tokens, params.n,
                         ExemplarSettings(**params.exemplars), params.seed)
    log.info("ACT eval set: %d vectors over layers %s", frame.height, params.layers)
    write_table(frame, snakemake.output[0], "feature_eval")  # noqa: F821
