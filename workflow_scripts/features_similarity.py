"""Snakemake wrapper: activation similarity of one explainer to the target through a Pi_l (Table 5, Figure 6)."""

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from introspect.explainers.model import PROJECTION_FILE
from introspect.groundtruth.activations import INPUT_LAYER, load_cache
from introspect.groundtruth.exemplars import make_windows
from introspect.groundtruth.similarity import activation_similarity, relative_layer
from introspect.models.loading import load_stage_model
from introspect.runlog import logged
from introspect.schemas import read_table

with logged(snakemake.log[0]) as log:  # noqa: F821 (injected by Snakemake)
    params, inputs, wc = snakemake.params, snakemake.input, snakemake.wildcards  # noqa: F821
    torch.set_num_threads(snakemake.threads)  # noqa: F821
    tokens = read_table(inputs.tokens, "feature_tokens")
    test = read_table(inputs.test, "feature_eval")
    paths = dict(zip(params.layers, inputs.activations))
    # Table 5: the pre-trained projection (or none); Figure 6: the run's own trained Pi_l from its checkpoint
    if "run" in inputs.keys():
        source = Path(inputs.run) / PROJECTION_FILE
        weights = load_file(source) if source.exists() else None
    else:
        source = inputs.get("projection")
        weights = load_file(source) if source else None
    projections = None if weights is None else {int(k): w for k, w in weights.items()}
    log.info("Pi_l: %s", source if projections is not None else "identity (no projection)")
    model, tokenizer, _, _ = load_stage_model(inputs.explainer, params.device, params.dtype,
                                              rule=snakemake.rule, gpus="features")  # noqa: F821
    n_explainer = model.config.get_text_config().num_hidden_layers
    layer_map = {layer: INPUT_LAYER if params.align == "input" else
                 relative_layer(layer, params.n_target_layers, n_explainer) for layer in params.layers}
    windows = make_windows(tokens, params.width)
    rows = windows["rows"].to_list()
    feature_windows, seqs = {}, set()
    for layer in params.layers:
        items = test.filter(test["layer"] == layer).head(params.similarity["n_features"])
        if items.height < params.similarity["n_features"]:  # no silent cap: Table 5 would average fewer items
            raise ValueError(f"features.similarity.n_features: {params.similarity['n_features']} features asked "
                             f"for layer {layer}, but the test split holds {items.height}; lower n_features")
        entries = []
        for vector, window_ids, kinds in items.select("vector", "windows", "kinds").iter_rows():
            top = [w for w, k in zip(window_ids, kinds) if k == "top"][:3]
            entries.append((np.asarray(vector), [np.asarray(rows[w]) for w in top]))
            seqs.update(windows["seq_id"][w] for w in top)
        feature_windows[layer] = entries
    results = activation_similarity(lambda layer: load_cache(paths[layer], tokens), tokens, sorted(seqs), model,
                                    tokenizer, layer_map, feature_windows, projections, params.projection_name,
                                    batch_size=params.similarity.get("batch_size", 16))
    log.info("similarity to %s: %s", wc.target, results)
    record = {"target": wc.target, "explainer": params.explainer, "run": params.run, "align": params.align,
              "projection": params.projection_name, "layers": results}
    with open(snakemake.output[0], "w") as out:  # noqa: F821
        json.dump(record, out, indent=2)
