# Activation patching ground truth (paper section 2.3, appendix E.2): pairs -> sweep -> balanced dataset -> Table 6.


rule patching_pairs:
    """Draw counterfactual pairs (x, x') that share a relation and their answer options."""
    output:
        "results/patching/pairs.parquet",
    params:
        facts=config["patching"]["facts"],
        n_pairs=config["patching"]["n_pairs"],
        n_options=config["patching"]["n_options"],
        seed=config["seed"],
    log:
        "logs/patching_pairs.log",
    benchmark:
        "benchmarks/patching_pairs.tsv"
    conda:
        "../envs/introspect.yaml"
    script:
        "../workflow_scripts/patching_pairs.py"


rule patching_sweep:
    """Patch every token position x layer chunk of every pair the target answers correctly."""
    input:
        model=lambda wc: model_dir(wc.target),
        pairs="results/patching/pairs.parquet",
    output:
        sweep="results/patching/{target}/sweep.parquet",
        stats="results/patching/{target}/sweep_stats.json",
    params:
        prompt_format=lambda wc: patching_target(wc.target)["prompt_format"],
        chat=lambda wc: patching_target(wc.target)["chat"],
        unknown_option=config["patching"].get("unknown_option", "unknown"),
        require_correct=config["patching"].get("require_correct", True),
        chunks=lambda wc: patching_chunks(wc.target),
        batch_size=config["patching"]["batch_size"],
        device=config["compute"]["device"],
    log:
        "logs/patching_sweep/{target}.log",
    benchmark:
        "benchmarks/patching_sweep/{target}.tsv"
    threads: stage_threads()
    resources:
        gpu=stage_gpus("patching"),
    conda:
        "../envs/introspect.yaml"
    script:
        "../workflow_scripts/patching_sweep.py"


rule patching_dataset:
    """Split by pair into train/test and balance has-changed within each (token type, chunk) cell."""
    input:
        "results/patching/{target}/sweep.parquet",
    output:
        "results/patching/{target}/dataset.parquet",
    params:
        balance=config["patching"]["balance"],
        seed=config["seed"],
    log:
        "logs/patching_dataset/{target}.log",
    benchmark:
        "benchmarks/patching_dataset/{target}.tsv"
    conda:
        "../envs/introspect.yaml"
    script:
        "../workflow_scripts/patching_dataset.py"


rule table6:
    """Counts per target x split x token type x layer chunk x has-changed (the paper's Table 6)."""
    input:
        datasets=expand("results/patching/{target}/dataset.parquet", target=patching_targets()),
    output:
        csv="results/table6.csv",
        md="results/table6.md",
    params:
        targets=patching_targets(),
    log:
        "logs/table6.log",
    benchmark:
        "benchmarks/table6.tsv"
    conda:
        "../envs/introspect.yaml"
    script:
        "../workflow_scripts/table6.py"


rule patching_train:
    """Fine-tune an explainer on one target's patching outcomes (appendix D prompts, continuous token)."""
    input:
        dataset="results/patching/{target}/dataset.parquet",
        model=lambda wc: model_dir(wc.explainer),
    output:
        directory("results/patching/{target}/explainers/{explainer}/{variant}"),
    params:
        train=config["patching"]["explain"]["train"],
        projection=lambda wc: explainer_projection(
            wc.target, wc.explainer, config["patching"]["explain"]["train"].get("projection", "auto")
        ),
        target_hidden=lambda wc: MODELS[wc.target].hidden_size,
        chat=lambda wc: MODELS[wc.explainer].instruct,
        seed=config["seed"],
        device=config["compute"]["device"],
    wildcard_constraints:
        variant="trained|no_activation|no_layer|no_token",
    log:
        "logs/patching_train/{target}/{explainer}/{variant}.log",
    benchmark:
        "benchmarks/patching_train/{target}/{explainer}/{variant}.tsv"
    threads: stage_threads()
    resources:
        gpu=stage_gpus("train"),
    conda:
        "../envs/introspect.yaml"
    script:
        "../workflow_scripts/patching_train.py"


rule patching_predict:
    """Explain the test split of one target with one explainer (greedy) and keep the raw outputs."""
    input:
        dataset="results/patching/{target}/dataset.parquet",
        explainer=patching_explainer_input,
    output:
        "results/patching/{target}/predictions/{explainer}/{variant}.parquet",
    params:
        eval=config["patching"]["explain"]["eval"],
        target_hidden=lambda wc: MODELS[wc.target].hidden_size,
        chat=lambda wc: MODELS[wc.explainer].instruct,
        seed=config["seed"],
        device=config["compute"]["device"],
    log:
        "logs/patching_predict/{target}/{explainer}/{variant}.log",
    benchmark:
        "benchmarks/patching_predict/{target}/{explainer}/{variant}.tsv"
    threads: stage_threads()
    resources:
        gpu=stage_gpus("train"),
    conda:
        "../envs/introspect.yaml"
    script:
        "../workflow_scripts/patching_predict.py"


rule table2:
    """Exact match, has-changed F1 and content match per (target, explainer, variant), best by paired t-test."""
    input:
        predictions=[
            f"results/patching/{t}/predictions/{e}/{v}.parquet" for t, e, v in explain_rows("patching")
        ],
    output:
        csv="results/table2.csv",
        md="results/table2.md",
    params:
        rows=explain_rows("patching"),
    log:
        "logs/table2.log",
    benchmark:
        "benchmarks/table2.tsv"
    conda:
        "../envs/introspect.yaml"
    script:
        "../workflow_scripts/table2.py"
