# Feature-description ground truth (paper section 2.2, 3.1-3.3, appendix B.2, E.1):
# corpus -> tokens -> activations (per layer) -> SAE (per layer) -> exemplars -> labels -> train/test split,
# ACT and dACT eval sets; activation similarity (Table 5) and the SAE summary table.


wildcard_constraints:
    layer=r"\d+",


# Tables take seconds, and the corpus is a small download (features.corpus.max_docs documents): they run in
# the main process, never as cluster jobs.
localrules:
    features_corpus,
    table5,
    features_sae_table,


rule features_corpus:
    """Collect the documents (builtin prose, the user's files or a hub dataset) and split train/eval."""
    output:
        corpus="results/features/corpus.parquet",
        stats="results/features/corpus_stats.json",
    params:
        code=library_code("features_corpus"),
        corpus=config["features"]["corpus"],
        seed=config["seed"],
    log:
        "logs/features_corpus.log",
    benchmark:
        "benchmarks/features_corpus.tsv"
    resources:
        **sized("features_corpus"),
    conda:
        "../envs/introspect.yaml"
    script:
        "../workflow_scripts/features_corpus.py"


rule features_tokens:
    """Tokenise the corpus with the target's tokenizer into sequences of seq_len tokens."""
    input:
        tokenizer=lambda wc: tokenizer_dir(wc.target),
        corpus="results/features/corpus.parquet",
    output:
        "results/{target}/features/tokens.parquet",
    params:
        code=library_code("features_tokens"),
        seq_len=config["features"]["activations"]["seq_len"],
        max_tokens=config["features"]["activations"]["max_tokens"],
    log:
        "logs/features_tokens/{target}.log",
    benchmark:
        "benchmarks/features_tokens/{target}.tsv"
    resources:
        **sized("features_tokens"),
    conda:
        "../envs/introspect.yaml"
    script:
        "../workflow_scripts/features_tokens.py"


rule features_activations:
    """Residual stream after one layer for every corpus token (float16 safetensors)."""
    input:
        model=lambda wc: model_dir(wc.target),
        tokens="results/{target}/features/tokens.parquet",
    output:
        "results/{target}/features/activations/layer{layer}.safetensors",
    params:
        code=library_code("features_activations"),
        batch_size=config["features"]["activations"]["batch_size"],
        device=config["compute"]["device"],
        dtype=compute_dtype("features_activations"),
    log:
        "logs/features_activations/{target}/layer{layer}.log",
    benchmark:
        "benchmarks/features_activations/{target}/layer{layer}.tsv"
    threads: sized_threads("features_activations")
    resources:
        **sized("features_activations", models=lambda wc: [wc.target]),
    conda:
        "../envs/introspect.yaml"
    script:
        "../workflow_scripts/features_activations.py"


rule features_sae:
    """Train a TopK SAE on the layer's train tokens (or fetch LlamaScope's); FVU and L0 on eval tokens."""
    input:
        activations="results/{target}/features/activations/layer{layer}.safetensors",
        tokens="results/{target}/features/tokens.parquet",
    output:
        sae="results/{target}/features/sae/layer{layer}.safetensors",
        features="results/{target}/features/sae/layer{layer}.parquet",
        stats="results/{target}/features/sae/layer{layer}.json",
    params:
        code=library_code("features_sae"),
        sae=lambda wc: feature_setting(wc.target, "sae"),
        seed=config["seed"],
        device=config["compute"]["device"],
    log:
        "logs/features_sae/{target}/layer{layer}.log",
    benchmark:
        "benchmarks/features_sae/{target}/layer{layer}.tsv"
    threads: sized_threads("features_sae")
    resources:
        **sized("features_sae"),
    conda:
        "../envs/introspect.yaml"
    script:
        "../workflow_scripts/features_sae.py"


rule features_exemplars:
    """Top-activating and random eval windows of every SAE feature, with per-token activations."""
    input:
        activations="results/{target}/features/activations/layer{layer}.safetensors",
        tokens="results/{target}/features/tokens.parquet",
        sae="results/{target}/features/sae/layer{layer}.safetensors",
    output:
        exemplars="results/{target}/features/exemplars/layer{layer}.parquet",
        stats="results/{target}/features/exemplars/layer{layer}.json",
    params:
        code=library_code("features_exemplars"),
        exemplars=config["features"]["exemplars"],
        seed=config["seed"],
        device=config["compute"]["device"],
    log:
        "logs/features_exemplars/{target}/layer{layer}.log",
    benchmark:
        "benchmarks/features_exemplars/{target}/layer{layer}.tsv"
    threads: sized_threads("features_exemplars")
    resources:
        **sized("features_exemplars"),
    conda:
        "../envs/introspect.yaml"
    script:
        "../workflow_scripts/features_exemplars.py"


rule features_labels:
    """Label every feature: equation 2 with the simulator, or Neuronpedia's explanations."""
    input:
        exemplars="results/{target}/features/exemplars/layer{layer}.parquet",
        tokens="results/{target}/features/tokens.parquet",
    output:
        labels="results/{target}/features/labels/layer{layer}.parquet",
        stats="results/{target}/features/labels/layer{layer}.json",
    params:
        code=library_code("features_labels"),
        labels=lambda wc: feature_setting(wc.target, "labels"),
        simulator=config["features"]["simulator"],
        width=config["features"]["exemplars"]["width"],
        n_top=config["features"]["exemplars"]["n_top"],
        seed=config["seed"],
        cache_dir="resources/cache/simulator",
        device=config["compute"]["device"],
    log:
        "logs/features_labels/{target}/layer{layer}.log",
    benchmark:
        "benchmarks/features_labels/{target}/layer{layer}.tsv"
    threads: sized_threads("features_labels")
    resources:
        **sized("features_labels", models=lambda wc: simulator_models()),
    conda:
        "../envs/introspect.yaml"
    script:
        "../workflow_scripts/features_labels.py"


rule features_split:
    """Hold out n_test labelled features per layer (the SAE eval set); the rest is the training pool (its
    vectors streamed to a float16 row file, a chunk at a time)."""
    input:
        labels=lambda wc: expand("results/{{target}}/features/labels/layer{layer}.parquet",
                                 layer=feature_layers(wc.target)),
        features=lambda wc: expand("results/{{target}}/features/sae/layer{layer}.parquet",
                                   layer=feature_layers(wc.target)),
        exemplars=lambda wc: expand("results/{{target}}/features/exemplars/layer{layer}.parquet",
                                    layer=feature_layers(wc.target)),
        tokens="results/{target}/features/tokens.parquet",
    output:
        train="results/{target}/features/train.parquet",
        vectors="results/{target}/features/train_vectors.safetensors",
        test="results/{target}/features/eval/sae.parquet",
        sample="results/{target}/features/labels_sample.md",
        stats="results/{target}/features/split.json",
    params:
        code=library_code("features_split"),
        split=config["features"]["split"],
        width=config["features"]["exemplars"]["width"],
        seed=config["seed"],
        budget_mb=memory_budget_mb(),
    log:
        "logs/features_split/{target}.log",
    benchmark:
        "benchmarks/features_split/{target}.tsv"
    resources:
        **sized("features_split"),
    conda:
        "../envs/introspect.yaml"
    script:
        "../workflow_scripts/features_split.py"


rule features_eval_act:
    """ACT eval set: full activations h_l,t(x) at sampled eval tokens, with their exemplars."""
    input:
        activations=lambda wc: expand("results/{{target}}/features/activations/layer{layer}.safetensors",
                                      layer=feature_layers(wc.target)),
        tokens="results/{target}/features/tokens.parquet",
    output:
        "results/{target}/features/eval/act.parquet",
    params:
        code=library_code("features_eval_act"),
        layers=lambda wc: feature_layers(wc.target),
        n=config["features"]["eval"]["n_act"],
        exemplars=config["features"]["exemplars"],
        seed=config["seed"],
    log:
        "logs/features_eval_act/{target}.log",
    benchmark:
        "benchmarks/features_eval_act/{target}.tsv"
    threads: sized_threads("features_eval_act")
    resources:
        **sized("features_eval_act"),
    conda:
        "../envs/introspect.yaml"
    script:
        "../workflow_scripts/features_eval_act.py"


rule features_eval_dact:
    """dACT eval set: h(x) - h(x') at the subject's last token of counterfactual pairs, with exemplars."""
    input:
        model=lambda wc: model_dir(wc.target),
        pairs="results/patching/pairs.parquet",
        activations=lambda wc: expand("results/{{target}}/features/activations/layer{layer}.safetensors",
                                      layer=feature_layers(wc.target)),
        tokens="results/{target}/features/tokens.parquet",
    output:
        "results/{target}/features/eval/dact.parquet",
    params:
        code=library_code("features_eval_dact"),
        layers=lambda wc: feature_layers(wc.target),
        n=config["features"]["eval"]["n_dact"],
        exemplars=config["features"]["exemplars"],
        seed=config["seed"],
        device=config["compute"]["device"],
        dtype=compute_dtype("features_eval_dact"),
    log:
        "logs/features_eval_dact/{target}.log",
    benchmark:
        "benchmarks/features_eval_dact/{target}.tsv"
    threads: sized_threads("features_eval_dact")
    resources:
        **sized("features_eval_dact", models=lambda wc: [wc.target]),
    conda:
        "../envs/introspect.yaml"
    script:
        "../workflow_scripts/features_eval_dact.py"


rule features_projection:
    """Pi_l per target layer fitted by least squares on aligned corpus activations (pre-trained projection):
    onto the explainer layer at the same relative depth (align: depth, the paper's) or onto the explainer's
    input embedding, where the continuous token is written (align: input)."""
    input:
        explainer=lambda wc: model_dir(wc.explainer),
        activations=lambda wc: expand("results/{{target}}/features/activations/layer{layer}.safetensors",
                                      layer=feature_layers(wc.target)),
        tokens="results/{target}/features/tokens.parquet",
    output:
        weights="results/{target}/features/projections/{align}/{explainer}.safetensors",
        stats="results/{target}/features/projections/{align}/{explainer}.json",
    wildcard_constraints:
        align="depth|input",
    params:
        code=library_code("features_projection"),
        layers=lambda wc: feature_layers(wc.target),
        n_target_layers=lambda wc: MODELS[wc.target].n_layers,
        n_sequences=200,
        align=lambda wc: wc.align,
        device=config["compute"]["device"],
        dtype=compute_dtype("features_projection"),
    log:
        "logs/features_projection/{target}/{align}/{explainer}.log",
    benchmark:
        "benchmarks/features_projection/{target}/{align}/{explainer}.tsv"
    threads: sized_threads("features_projection")
    resources:
        **sized("features_projection", models=lambda wc: [wc.explainer]),
    conda:
        "../envs/introspect.yaml"
    script:
        "../workflow_scripts/features_projection.py"


rule features_similarity:
    """Activation similarity of one explainer model to the target (appendix B.2, Table 5): directly when the
    hidden sizes match, else through the pre-trained projection (target layer -> the explainer's layer at the
    same relative depth), fitted on other sequences than the ones measured."""
    input:
        unpack(lambda wc: similarity_projection_input(wc.target, wc.explainer)),
        explainer=lambda wc: model_dir(wc.explainer),
        activations=lambda wc: expand("results/{{target}}/features/activations/layer{layer}.safetensors",
                                      layer=feature_layers(wc.target)),
        test="results/{target}/features/eval/sae.parquet",
        tokens="results/{target}/features/tokens.parquet",
    output:
        "results/{target}/features/similarity/{explainer}.json",
    wildcard_constraints:
        explainer="[^/]+",
    params:
        code=library_code("features_similarity"),
        layers=lambda wc: feature_layers(wc.target),
        n_target_layers=lambda wc: MODELS[wc.target].n_layers,
        explainer=lambda wc: wc.explainer,
        run=None,
        align="depth",
        projection_name=lambda wc: "pre-trained" if similarity_projection_input(wc.target, wc.explainer)
        else "none",
        similarity=config["features"]["similarity"],
        width=config["features"]["exemplars"]["width"],
        device=config["compute"]["device"],
        dtype=compute_dtype("features_similarity"),
    log:
        "logs/features_similarity/{target}/{explainer}.log",
    benchmark:
        "benchmarks/features_similarity/{target}/{explainer}.tsv"
    threads: sized_threads("features_similarity")
    resources:
        **sized("features_similarity", models=lambda wc: [wc.explainer]),
    conda:
        "../envs/introspect.yaml"
    script:
        "../workflow_scripts/features_similarity.py"


rule table5:
    """Activation similarity of each explainer model to each target (the paper's Table 5)."""
    input:
        [f"results/{t}/features/similarity/{e}.json" for t, e in similarity_pairs()],
    output:
        csv="results/table5.csv",
        md="results/table5.md",
        html=report("results/table5.html", caption="../report/table5.rst",
                    category="Feature descriptions"),
    params:
        code=library_code("table5"),
    log:
        "logs/table5.log",
    benchmark:
        "benchmarks/table5.tsv"
    resources:
        **sized("table5"),
    conda:
        "../envs/introspect.yaml"
    script:
        "../workflow_scripts/table5.py"


rule features_sae_table:
    """FVU, L0 and dead share of every SAE layer, with the labelling statistics (docs/results.md, Feature ground truth)."""
    input:
        sae=[f"results/{t}/features/sae/layer{l}.json" for t in feature_targets() for l in feature_layers(t)],
        exemplars=[f"results/{t}/features/exemplars/layer{l}.json" for t in feature_targets()
                   for l in feature_layers(t)],
        labels=[f"results/{t}/features/labels/layer{l}.json" for t in feature_targets() for l in feature_layers(t)],
    output:
        csv="results/features_sae.csv",
        md="results/features_sae.md",
        html=report("results/features_sae.html", caption="../report/features_sae.rst",
                    category="Feature descriptions"),
    params:
        code=library_code("features_sae_table"),
        rows=[(t, l) for t in feature_targets() for l in feature_layers(t)],
    log:
        "logs/features_sae_table.log",
    benchmark:
        "benchmarks/features_sae_table.tsv"
    resources:
        **sized("features_sae_table"),
    conda:
        "../envs/introspect.yaml"
    script:
        "../workflow_scripts/features_sae_table.py"
