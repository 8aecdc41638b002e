"""Snakemake wrapper: pre-trained projection Pi_l (target layer -> explainer layer at the same relative depth, or
-> the explainer's input embedding) per layer, by least squares."""

import json

import torch
from safetensors.torch import save_file

from introspect.groundtruth.activations import INPUT_LAYER, load_cache
from introspect.models.loading import load_stage_model
from introspect.runlog import logged
from introspect.schemas import read_table
from introspect.groundtruth.similarity import pretrained_projections, relative_layer

with logged(snakemake.log[0]) as log:  # noqa: F821 (injected by Snakemake)
    params = snakemake.params  # noqa: F821
    torch.set_num_threads(snakemake.threads)  # noqa: F821
    tokens = read_table(snakemake.input.tokens, "feature_tokens")  # noqa: F821
    paths = dict(zip(params.layers, snakemake.input.activations))  # noqa: F821
    model, tokenizer, _, _ = load_stage_model(snakemake.input.explainer, params.device, params.dtype,  # noqa: F821
                                            rule=snakemake.rule, gpus="features")  # noqa: F821
    n_explainer = model.config.get_text_config().num_hidden_layers
    layer_map = {layer: INPUT_LAYER if params.align == "input" else relative_layer(layer, params.n_target_layers,
                                                                                   n_explainer)
                 for layer in params.layers}
    train_seqs = tokens.filter(tokens["split"] == "train")["seq_id"].unique(maintain_order=True).to_list()
    weights, stats = pretrained_projections(lambda layer: load_cache(paths[layer], tokens), tokens,
                                            train_seqs[: params.n_sequences], model, tokenizer, layer_map)
    log.info("pre-trained projections: %s", stats)
    save_file({str(layer): w for layer, w in weights.items()}, snakemake.output.weights)  # noqa: F821
    with open(snakemake.output.stats, "w") as out:  # noqa: F821
        json.dump({str(k): v for k, v in stats.items()}, out, indent=2, sort_keys=True)
