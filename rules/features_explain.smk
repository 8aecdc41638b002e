# Feature-description explainers (paper section 3-4, appendix A, D): pre-trained projections -> explainer runs ->
# descriptions of the held-out SAE, ACT and dACT vectors; nearest-neighbour and gold baselines; judge and
# simulator scores -> Table 1.


wildcard_constraints:
    run="|".join(re.escape(r) for r in feature_runs()),


rule feature_projection:
    """Pi_l per target layer fitted by least squares on aligned corpus activations (pre-trained projection)."""
    input:
        explainer=lambda wc: model_dir(wc.explainer),
        activations=lambda wc: expand("results/{{target}}/features/activations/layer{layer}.safetensors",
                                      layer=feature_layers(wc.target)),
        tokens="results/{target}/features/tokens.parquet",
    output:
        weights="results/{target}/features/projections/{explainer}.safetensors",
        stats="results/{target}/features/projections/{explainer}.json",
    params:
        layers=lambda wc: feature_layers(wc.target),
        n_target_layers=lambda wc: MODELS[wc.target].n_layers,
        n_sequences=200,
        device=config["compute"]["device"],
    log:
        "logs/feature_projection/{target}/{explainer}.log",
    benchmark:
        "benchmarks/feature_projection/{target}/{explainer}.tsv"
    threads: stage_threads()
    resources:
        gpu=stage_gpus("features"),
    conda:
        "../envs/introspect.yaml"
    script:
        "../workflow_scripts/feature_projection.py"


rule feature_train:
    """Fine-tune one explainer run on the training features (appendix D prompts, continuous token)."""
    input:
        unpack(feature_train_inputs),
    output:
        directory("results/{target}/features/explainers/{run}"),
    params:
        train=lambda wc: feature_run_train(wc.run),
        projection=lambda wc: feature_run_projection(wc.run),
        target_hidden=lambda wc: MODELS[wc.target].hidden_size,
        chat=lambda wc: MODELS[feature_run(wc.run)["explainer"]].instruct,
        seed=config["seed"],
        device=config["compute"]["device"],
    log:
        "logs/feature_train/{target}/{run}.log",
    benchmark:
        "benchmarks/feature_train/{target}/{run}.tsv"
    threads: stage_threads()
    resources:
        gpu=stage_gpus("train"),
    conda:
        "../envs/introspect.yaml"
    script:
        "../workflow_scripts/feature_train.py"


rule feature_predict:
    """Describe every vector of the three eval sets with one trained explainer (greedy; the model loads once)."""
    input:
        evalsets=lambda wc: expand("results/{{target}}/features/eval/{evalset}.parquet",
                                   evalset=method_eval_sets(wc.run)),
        explainer="results/{target}/features/explainers/{run}",
    output:
        [f"results/{{target}}/features/predictions/{{run}}/{e}.parquet" for e in ("sae", "act", "dact")],
    params:
        eval=config["features"]["explain"]["eval"],
        chat=lambda wc: MODELS[feature_run(wc.run)["explainer"]].instruct,
        seed=config["seed"],
        device=config["compute"]["device"],
    log:
        "logs/feature_predict/{target}/{run}.log",
    benchmark:
        "benchmarks/feature_predict/{target}/{run}.tsv"
    threads: stage_threads()
    resources:
        gpu=stage_gpus("train"),
    conda:
        "../envs/introspect.yaml"
    script:
        "../workflow_scripts/feature_predict.py"


rule feature_baseline:
    """Nearest-neighbour (all layers / same layer) descriptions of the three eval sets."""
    input:
        evalsets=expand("results/{{target}}/features/eval/{evalset}.parquet", evalset=["sae", "act", "dact"]),
        train="results/{target}/features/train.parquet",
    output:
        [f"results/{{target}}/features/predictions/{{baseline}}/{e}.parquet" for e in ("sae", "act", "dact")],
    wildcard_constraints:
        baseline="nn_all|nn_layer",
    log:
        "logs/feature_baseline/{target}/{baseline}.log",
    benchmark:
        "benchmarks/feature_baseline/{target}/{baseline}.tsv"
    conda:
        "../envs/introspect.yaml"
    script:
        "../workflow_scripts/feature_baseline.py"


rule feature_gold:
    """The gold SAE labels of the held-out features, as a method's descriptions."""
    input:
        evalsets=["results/{target}/features/eval/sae.parquet"],
    output:
        ["results/{target}/features/predictions/gold/sae.parquet"],
    log:
        "logs/feature_baseline/{target}/gold.log",
    benchmark:
        "benchmarks/feature_baseline/{target}/gold.tsv"
    conda:
        "../envs/introspect.yaml"
    script:
        "../workflow_scripts/feature_baseline.py"


rule feature_score:
    """Simulator scores (check half of each item's exemplars) and, on held-out SAE features, the LM judge."""
    input:
        evalsets=lambda wc: expand("results/{{target}}/features/eval/{evalset}.parquet",
                                   evalset=method_eval_sets(wc.method)),
        predictions=lambda wc: expand("results/{{target}}/features/predictions/{{method}}/{evalset}.parquet",
                                      evalset=method_eval_sets(wc.method)),
        tokens="results/{target}/features/tokens.parquet",
    output:
        "results/{target}/features/scores/{method}.parquet",
    params:
        evalsets=lambda wc: method_eval_sets(wc.method),
        simulator=config["features"]["simulator"],
        judge=config["features"]["explain"]["judge"],
        width=config["features"]["exemplars"]["width"],
        n_top=config["features"]["exemplars"]["n_top"],
        cache_dir="resources/cache",
        device=config["compute"]["device"],
    log:
        "logs/feature_score/{target}/{method}.log",
    benchmark:
        "benchmarks/feature_score/{target}/{method}.tsv"
    threads: stage_threads()
    conda:
        "../envs/introspect.yaml"
    script:
        "../workflow_scripts/feature_score.py"


rule table1:
    """Explainers and baselines on held-out SAE (judge, simulator), ACT and dACT (simulator): the paper's Table 1."""
    input:
        [f"results/{config['features']['explain']['target']}/features/scores/{m}.parquet" for m in table1_methods()],
    output:
        csv="results/table1.csv",
        md="results/table1.md",
    params:
        methods=table1_methods(),
        target=config["features"]["explain"]["target"],
        judge=config["features"]["explain"]["judge"]["backend"],
        simulator=config["features"]["simulator"]["backend"],
    log:
        "logs/table1.log",
    benchmark:
        "benchmarks/table1.tsv"
    conda:
        "../envs/introspect.yaml"
    script:
        "../workflow_scripts/table1.py"
