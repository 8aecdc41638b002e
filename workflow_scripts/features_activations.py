"""Snakemake wrapper: cache one layer's residual stream over the tokenised corpus."""

import torch

from introspect.groundtruth.activations import cache_layer, save_cache
from introspect.models.loading import load_stage_model
from introspect.runlog import logged
from introspect.schemas import read_table

with logged(snakemake.log[0]) as log:  # noqa: F821 (injected by Snakemake)
    params = snakemake.params  # noqa: F821
    torch.set_num_threads(snakemake.threads)  # noqa: F821
    layer = int(snakemake.wildcards.layer)  # noqa: F821
    model, tokenizer, _, _ = load_stage_model(snakemake.input.model, params.device, params.dtype,  # noqa: F821
                                            rule=snakemake.rule, gpus="features")  # noqa: F821
    tokens = read_table(snakemake.input.tokens, "feature_tokens")  # noqa: F821
    tensors = cache_layer(model, tokenizer, tokens, layer, batch_size=params.batch_size)
    save_cache(tensors, snakemake.output[0], layer)  # noqa: F821
