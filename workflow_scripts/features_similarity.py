"""Snakemake wrapper: activation similarity of one explainer model to the target (Table 5)."""

import json

import numpy as np
import torch

from introspect.groundtruth.activations import load_cache
from introspect.groundtruth.exemplars import make_windows
from introspect.models.loading import load_stage_model
from introspect.runlog import logged
from introspect.schemas import read_table
from introspect.groundtruth.similarity import activation_similarity, relative_layer

with logged(snakemake.log[0]) as log:  # noqa: F821 (injected by Snakemake)
    params = snakemake.params  # noqa: F821
    wc = snakemake.wildcards  # noqa: F821
    torch.set_num_threads(snakemake.threads)  # noqa: F821
    tokens = read_table(snakemake.input.tokens, "feature_tokens")  # noqa: F821
    test = read_table(snakemake.input.test, "feature_eval")  # noqa: F821
    paths = dict(zip(params.layers, snakemake.input.activations))  # noqa: F821
    model, tokenizer, _, _ = load_stage_model(snakemake.input.explainer, params.device, params.dtype,  # noqa: F821
                                            rule=snakemake.rule, gpus="features")  # noqa: F821
    n_explainer = model.config.get_text_config().num_hidden_layers
    layer_map = {layer: relative_layer(layer, params.n_target_layers, n_explainer) for layer in params.layers}
    windows = make_windows(tokens, params.width)
    rows = windows["rows"].to_list()
    feature_windows, seqs = {}, set()
    n_features = params.similarity["n_features"]
    for layer in params.layers:
        items = test.filter(test["layer"] == layer).head(n_features)
        entries = []
        for vector, window_ids, kinds in items.select("vector", "windows", "kinds").iter_rows():
            top = [w for w, k in zip(window_ids, kinds) if k == "top"][:3]
            entries.append((np.asarray(vector), [np.asarray(rows[w]) for w in top]))
            seqs.update(windows["seq_id"][w] for w in top)
        feature_windows[layer] = entries
    hidden_size = test["vector"].dtype.size
    project = not params.same_model and model.config.get_text_config().hidden_size != hidden_size
    results = activation_similarity(lambda layer: load_cache(paths[layer], tokens), tokens, sorted(seqs), model,
                                    tokenizer, layer_map, feature_windows, project,
                                    batch_size=params.similarity.get("batch_size", 16))
    log.info("similarity of %s to %s: %s", wc.explainer, wc.target, results)
    with open(snakemake.output[0], "w") as out:  # noqa: F821
        json.dump({"target": wc.target, "explainer": wc.explainer, "layers": results}, out, indent=2)
