# Explainers of activation-patching outcomes (paper section 5.1): train -> predict -> Table 2.


# Tables take seconds: they run in the main process, never as cluster jobs.
localrules:
    table2,


rule patching_train:
    """Fine-tune an explainer on one target's patching outcomes (appendix D prompts, continuous token)."""
    input:
        dataset="results/patching/{target}/dataset.parquet",
        model=lambda wc: model_dir(wc.explainer),
    output:
        directory("results/patching/{target}/explainers/{explainer}/{variant}"),
    params:
        code=library_code("patching_train"),
        deepspeed=deepspeed_config_text(config["patching"]["explain"]["train"]),
        train=config["patching"]["explain"]["train"],
        projection=lambda wc: explainer_projection(
            wc.target, wc.explainer, config["patching"]["explain"]["train"].get("projection", "auto")
        ),
        target_hidden=lambda wc: MODELS[wc.target].hidden_size,
        chat=lambda wc: MODELS[wc.explainer].instruct,
        seed=config["seed"],
        device=config["compute"]["device"],
        dtype=compute_dtype("patching_train"),
    wildcard_constraints:
        variant="trained|no_activation|no_layer|no_token",
    log:
        "logs/patching_train/{target}/{explainer}/{variant}.log",
    benchmark:
        "benchmarks/patching_train/{target}/{explainer}/{variant}.tsv"
    threads: sized_threads("patching_train", explainer=lambda wc: wc.explainer)
    resources:
        **sized("patching_train", models=lambda wc: [wc.explainer]),
        train_processes=train_processes(),
        checkpoint_every=checkpoint_every(),
        nodes=1,  # torchrun --standalone: the job's GPUs on one node
    conda:
        "../envs/introspect.yaml"
    script:
        "../workflow_scripts/patching_train.py"


rule patching_predict:
    """Explain the test split of one target with one explainer (greedy) and keep the raw outputs."""
    input:
        dataset="results/patching/{target}/dataset.parquet",
        explainer=lambda wc: explainer_input("patching", wc),
    output:
        "results/patching/{target}/predictions/{explainer}/{variant}.parquet",
    params:
        code=library_code("patching_predict"),
        eval=config["patching"]["explain"]["eval"],
        target_hidden=lambda wc: MODELS[wc.target].hidden_size,
        chat=lambda wc: MODELS[wc.explainer].instruct,
        seed=config["seed"],
        device=config["compute"]["device"],
        dtype=compute_dtype("patching_predict"),
    log:
        "logs/patching_predict/{target}/{explainer}/{variant}.log",
    benchmark:
        "benchmarks/patching_predict/{target}/{explainer}/{variant}.tsv"
    threads: sized_threads("patching_predict")
    resources:
        **sized("patching_predict", models=lambda wc: [wc.explainer]),
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
        html=report("results/table2.html", caption="../report/table2.rst",
                    category="Activation patching"),
    params:
        code=library_code("table2"),
        rows=explain_rows("patching"),
    log:
        "logs/table2.log",
    benchmark:
        "benchmarks/table2.tsv"
    resources:
        **sized("table2"),
    conda:
        "../envs/introspect.yaml"
    script:
        "../workflow_scripts/table2.py"
