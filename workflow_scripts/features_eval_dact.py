"""Snakemake wrapper: the dACT eval set (counterfactual activation differences) with exemplars."""

import torch

from introspect.groundtruth.activations import load_cache
from introspect.groundtruth.exemplars import ExemplarSettings
from introspect.groundtruth.evalsets import dact_vectors, vector_eval_set
from introspect.models.loading import load_stage_model
from introspect.runlog import logged
from introspect.schemas import read_table, write_table

with logged(snakemake.log[0]) as log:  # noqa: F821 (injected by Snakemake)
    params = snakemake.params  # noqa: F821
    torch.set_num_threads(snakemake.threads)  # noqa: F821
    tokens = read_table(snakemake.input.tokens, "feature_tokens")  # noqa: F821
    model, tokenizer, _, _ = load_stage_model(snakemake.input.model, params.device, params.dtype,  # noqa: F821
                                            rule=snakemake.rule, gpus="features")  # noqa: F821
    pairs = read_table(snakemake.input.pairs, "patching_pairs")  # noqa: F821
    vectors, sources = dact_vectors(model, tokenizer, pairs, params.layers, params.n, params.seed)
    del model
    paths = dict(zip(params.layers, snakemake.input.activations))  # noqa: F821
    frame = vector_eval_set("dact", vectors, sources, lambda layer: load_cache(paths[layer], tokens), tokens,
                            ExemplarSettings(**params.exemplars), params.seed)
    log.info("dACT eval set: %d vectors over layers %s", frame.height, params.layers)
    write_table(frame, snakemake.output[0], "feature_eval")  # noqa: F821
