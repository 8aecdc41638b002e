# Input ablation (hint) ground truth and explainers (paper section 2.4, 5.2, appendix D, E.3, F.3):
# questions -> target runs with and without a hint -> balanced dataset -> Table 7; train -> predict -> Table 3.


# Tables take seconds, and the questions are a small download: they run in the main process, never as
# cluster jobs.
localrules:
    hints_questions,
    table7,


rule hints_questions:
    """Collect the multiple-choice questions (builtin generator, MMLU files or the hub): all, a pooled sample
    (hints.questions.n) or the same number from every subject (hints.questions.per_subject)."""
    output:
        "results/hints/questions.parquet",
    params:
        code=library_code("hints_questions"),
        questions=config["hints"]["questions"],
        seed=config["seed"],
    log:
        "logs/hints_questions.log",
    benchmark:
        "benchmarks/hints_questions.tsv"
    resources:
        **sized("hints_questions"),
    conda:
        "../envs/introspect.yaml"
    script:
        "../workflow_scripts/hints_questions.py"


rule hints_run:
    """The target's answer letter to every question without and with a hint."""
    input:
        model=lambda wc: model_dir(wc.target),
        questions="results/hints/questions.parquet",
    output:
        runs="results/hints/{target}/runs.parquet",
        stats="results/hints/{target}/run_stats.json",
    params:
        code=library_code("hints_run"),
        hint_format=lambda wc: config["hints"]["targets"][wc.target]["hint_format"],
        chat=lambda wc: config["hints"]["targets"][wc.target].get("chat", True),
        seed=config["seed"],
        device=config["compute"]["device"],
        dtype=compute_dtype("hints_run"),
    log:
        "logs/hints_run/{target}.log",
    benchmark:
        "benchmarks/hints_run/{target}.tsv"
    threads: sized_threads("hints_run")
    resources:
        **sized("hints_run", models=lambda wc: [wc.target]),
        forward_batch=forward_batch("hints"),
    conda:
        "../envs/introspect.yaml"
    script:
        "../workflow_scripts/hints_run.py"


rule hints_dataset:
    """Split by question into train/test and balance has-changed within each split."""
    input:
        "results/hints/{target}/runs.parquet",
    output:
        "results/hints/{target}/dataset.parquet",
    params:
        code=library_code("hints_dataset"),
        balance=config["hints"]["balance"],
        seed=config["seed"],
    log:
        "logs/hints_dataset/{target}.log",
    benchmark:
        "benchmarks/hints_dataset/{target}.tsv"
    resources:
        **sized("hints_dataset"),
    conda:
        "../envs/introspect.yaml"
    script:
        "../workflow_scripts/hints_dataset.py"


rule table7:
    """Changed / unchanged counts per target and split (the paper's Table 7), and the switch rate to the hint
    letter over the rows whose hint letter differs from the unhinted answer."""
    input:
        datasets=expand("results/hints/{target}/dataset.parquet", target=hint_targets()),
    output:
        csv="results/table7.csv",
        md="results/table7.md",
        html=report("results/table7.html", caption="../report/table7.rst",
                    category="Input ablation"),
    params:
        code=library_code("table7"),
        targets=hint_targets(),
    log:
        "logs/table7.log",
    benchmark:
        "benchmarks/table7.tsv"
    resources:
        **sized("table7"),
    conda:
        "../envs/introspect.yaml"
    script:
        "../workflow_scripts/table7.py"
