# Explainers of input-ablation outcomes (paper section 5.2): train -> predict -> Table 3.


# Tables take seconds: they run in the main process, never as cluster jobs.
localrules:
    table3,


rule hints_train:
    """Fine-tune an explainer on one target's hint outcomes (appendix D prompt; text only, no vector)."""
    input:
        dataset="results/hints/{target}/dataset.parquet",
        model=lambda wc: model_dir(wc.explainer),
    output:
        directory("results/hints/{target}/explainers/{explainer}/{variant}"),
    params:
        code=library_code("hints_train"),
        deepspeed=deepspeed_config_text(config["hints"]["explain"]["train"]),
        train=config["hints"]["explain"]["train"],
        chat=lambda wc: explainer_chat(wc.explainer),
        seed=config["seed"],
        device=config["compute"]["device"],
        dtype=compute_dtype("hints_train"),
    wildcard_constraints:
        variant="trained",
    log:
        "logs/hints_train/{target}/{explainer}/{variant}.log",
    benchmark:
        "benchmarks/hints_train/{target}/{explainer}/{variant}.tsv"
    threads: sized_threads("hints_train", explainer=lambda wc: wc.explainer)
    resources:
        **sized("hints_train", models=lambda wc: [wc.explainer]),
        train_processes=train_processes(),
        checkpoint_every=checkpoint_every(),
        nodes=1,  # torchrun --standalone: the job's GPUs on one node
    conda:
        "../envs/introspect.yaml"
    script:
        "../workflow_scripts/hints_train.py"


rule hints_predict:
    """Explain the test split of one target with one explainer (greedy) and keep the raw outputs."""
    input:
        dataset="results/hints/{target}/dataset.parquet",
        explainer=lambda wc: explainer_input("hints", wc),
    output:
        "results/hints/{target}/predictions/{explainer}/{variant}.parquet",
    params:
        code=library_code("hints_predict"),
        eval=config["hints"]["explain"]["eval"],
        chat=lambda wc: explainer_chat(wc.explainer),
        seed=config["seed"],
        device=config["compute"]["device"],
        dtype=compute_dtype("hints_predict"),
    log:
        "logs/hints_predict/{target}/{explainer}/{variant}.log",
    benchmark:
        "benchmarks/hints_predict/{target}/{explainer}/{variant}.tsv"
    threads: sized_threads("hints_predict")
    resources:
        **sized("hints_predict", models=lambda wc: [wc.explainer]),
    conda:
        "../envs/introspect.yaml"
    script:
        "../workflow_scripts/hints_predict.py"


rule table3:
    """Exact match, has-changed F1 and content match per (explainer, target, variant), sorted by explainer."""
    input:
        predictions=[f"results/hints/{t}/predictions/{e}/{v}.parquet" for t, e, v in explain_rows("hints")],
    output:
        csv="results/table3.csv",
        md="results/table3.md",
        html=report("results/table3.html", caption="../report/table3.rst",
                    category="Input ablation"),
    params:
        code=library_code("table3"),
        rows=explain_rows("hints"),
    log:
        "logs/table3.log",
    benchmark:
        "benchmarks/table3.tsv"
    resources:
        **sized("table3"),
    conda:
        "../envs/introspect.yaml"
    script:
        "../workflow_scripts/table3.py"
