# Activation patching ground truth (paper section 2.3, appendix E.2): pairs -> sweep -> balanced dataset -> Table 6.


# Tables take seconds, and the facts are a small download: they run in the main process, never as cluster jobs.
localrules:
    patching_pairs,
    table6,


rule patching_pairs:
    """Draw counterfactual pairs (x, x') that share a relation and their answer options."""
    output:
        "results/patching/pairs.parquet",
    params:
        code=library_code("patching_pairs"),
        facts=config["patching"]["facts"],
        n_pairs=config["patching"]["n_pairs"],
        n_options=config["patching"]["n_options"],
        seed=config["seed"],
    log:
        "logs/patching_pairs.log",
    benchmark:
        "benchmarks/patching_pairs.tsv"
    resources:
        **sized("patching_pairs"),
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
        code=library_code("patching_sweep"),
        prompt_format=lambda wc: patching_target(wc.target)["prompt_format"],
        chat=lambda wc: patching_target(wc.target)["chat"],
        prefix=lambda wc: patching_target(wc.target).get("prefix", ""),
        unknown_option=config["patching"].get("unknown_option", "unknown"),
        require_correct=config["patching"].get("require_correct", True),
        chunks=lambda wc: patching_chunks(wc.target),
        device=config["compute"]["device"],
        dtype=compute_dtype("patching_sweep"),
    log:
        "logs/patching_sweep/{target}.log",
    benchmark:
        "benchmarks/patching_sweep/{target}.tsv"
    threads: sized_threads("patching_sweep")
    resources:
        **sized("patching_sweep", models=lambda wc: [wc.target]),
        forward_batch=forward_batch("patching"),
    conda:
        "../envs/introspect.yaml"
    script:
        "../workflow_scripts/patching_sweep.py"


rule patching_dataset:
    """Split by original fact into train/test; cap each (token type, chunk) cell, balance has-changed per split."""
    input:
        "results/patching/{target}/sweep.parquet",
    output:
        "results/patching/{target}/dataset.parquet",
    params:
        code=library_code("patching_dataset"),
        balance=config["patching"]["balance"],
        seed=config["seed"],
    log:
        "logs/patching_dataset/{target}.log",
    benchmark:
        "benchmarks/patching_dataset/{target}.tsv"
    resources:
        **sized("patching_dataset"),
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
        html=report("results/table6.html", caption="../report/table6.rst",
                    category="Activation patching"),
    params:
        code=library_code("table6"),
        targets=patching_targets(),
    log:
        "logs/table6.log",
    benchmark:
        "benchmarks/table6.tsv"
    resources:
        **sized("table6"),
    conda:
        "../envs/introspect.yaml"
    script:
        "../workflow_scripts/table6.py"
