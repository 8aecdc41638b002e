# Feature-description explainers (paper section 3-4, appendix A, D): pre-trained projections -> explainer runs ->
# descriptions of the held-out SAE, ACT and dACT vectors; nearest-neighbour and gold baselines; judge and
# simulator scores -> Table 1.


wildcard_constraints:
    run="|".join(re.escape(r) for r in feature_runs()),


# Tables and figures take seconds: they run in the main process, never as cluster jobs.
localrules:
    table1,
    figure6,


rule features_train:
    """Fine-tune one explainer run on the training features (appendix D prompts, continuous token)."""
    input:
        unpack(feature_train_inputs),
    output:
        directory("results/{target}/features/explainers/{run}"),
    params:
        code=library_code("features_train"),
        deepspeed=lambda wc: deepspeed_config_text(feature_run_train(wc.run)),
        train=lambda wc: feature_run_train(wc.run),
        n_per_layer=lambda wc: split_scaled(wc.run)[1],
        projection=lambda wc: feature_run_projection(wc.run),
        target_hidden=lambda wc: MODELS[wc.target].hidden_size,
        target_model=lambda wc: model_dir(wc.target),
        chat=lambda wc: feature_chat(wc.run),
        seed=lambda wc: feature_run(wc.run).get("seed", config["seed"]),
        sample_seed=config["seed"],  # a scaling point's features: the same as the NN baselines' at that n
        device=config["compute"]["device"],
        dtype=compute_dtype("features_train"),
    log:
        "logs/features_train/{target}/{run}.log",
    benchmark:
        "benchmarks/features_train/{target}/{run}.tsv"
    threads: sized_threads("features_train", explainer=lambda wc: feature_run(wc.run)["explainer"])
    resources:
        **sized("features_train", models=lambda wc: [feature_run(wc.run)["explainer"]]),
        train_processes=train_processes(),
        checkpoint_every=checkpoint_every(),
        nodes=1,  # torchrun --standalone: the job's GPUs on one node
    conda:
        "../envs/introspect.yaml"
    script:
        "../workflow_scripts/features_train.py"


rule features_predict:
    """Describe every vector of the three eval sets with one trained explainer (greedy; the model loads once)."""
    input:
        evalsets=lambda wc: expand("results/{{target}}/features/eval/{evalset}.parquet",
                                   evalset=method_eval_sets(wc.run)),
        explainer="results/{target}/features/explainers/{run}",
    output:
        [f"results/{{target}}/features/predictions/{{run}}/{e}.parquet" for e in ("sae", "act", "dact")],
    params:
        code=library_code("features_predict"),
        eval=config["features"]["explain"]["eval"],
        chat=lambda wc: feature_chat(wc.run),
        seed=config["seed"],
        device=config["compute"]["device"],
        dtype=compute_dtype("features_predict"),
    log:
        "logs/features_predict/{target}/{run}.log",
    benchmark:
        "benchmarks/features_predict/{target}/{run}.tsv"
    threads: sized_threads("features_predict")
    resources:
        **sized("features_predict", models=lambda wc: [feature_run(wc.run)["explainer"]]),
    conda:
        "../envs/introspect.yaml"
    script:
        "../workflow_scripts/features_predict.py"


rule features_baseline:
    """Nearest-neighbour (all layers / same layer) descriptions of the three eval sets. The bank searched is
    what the explainers train on: the seeded max_train sample of features.explain.train (fit_explainer's function
    and the top-level seed; Table 4 shares that section), at a scaling point its per-layer sample; bank.json says
    its size (the tables' n_train)."""
    input:
        evalsets=expand("results/{{target}}/features/eval/{evalset}.parquet", evalset=["sae", "act", "dact"]),
        train="results/{target}/features/train.parquet",
        vectors="results/{target}/features/train_vectors.safetensors",
    output:
        predictions=[f"results/{{target}}/features/predictions/{{baseline}}/{e}.parquet"
                     for e in ("sae", "act", "dact")],
        bank="results/{target}/features/predictions/{baseline}/bank.json",
    wildcard_constraints:
        baseline="(nn_all|nn_layer)(@n[0-9]+)?",
    params:
        code=library_code("features_baseline"),
        n_per_layer=lambda wc: split_scaled(wc.baseline)[1],
        # the explainers' sample: features.explain.train.max_train (a scaling point: its per-layer sample instead)
        max_train=lambda wc: None if split_scaled(wc.baseline)[1] else config["features"]["explain"]["train"].get(
            "max_train"),
        seed=config["seed"],
        budget_mb=memory_budget_mb(),
    log:
        "logs/features_baseline/{target}/{baseline}.log",
    benchmark:
        "benchmarks/features_baseline/{target}/{baseline}.tsv"
    threads: sized_threads("features_baseline")
    resources:
        **sized("features_baseline"),
    conda:
        "../envs/introspect.yaml"
    script:
        "../workflow_scripts/features_baseline.py"


rule features_gold:
    """The gold SAE labels of the held-out features, as a method's descriptions."""
    input:
        evalsets=["results/{target}/features/eval/sae.parquet"],
    output:
        predictions=["results/{target}/features/predictions/gold/sae.parquet"],
    params:
        code=library_code("features_baseline"),
    log:
        "logs/features_gold/{target}.log",
    benchmark:
        "benchmarks/features_gold/{target}.tsv"
    resources:
        **sized("features_gold"),
    conda:
        "../envs/introspect.yaml"
    script:
        "../workflow_scripts/features_baseline.py"


# SelfIE baselines: `selfie` runs with the table's target, `selfie-<model>` with another registry model of the
# target's hidden size (the paper's Table 1: Llama-3.1-8B and Llama-3.1-8B-Instruct reading Llama-3.1-8B's
# vectors). Checked here, before any job: a wrong model name or hidden size stops the run at start-up.
from introspect.names import is_selfie, selfie_interpreter

for _name, _table in feature_tables().items():
    for _method in _table.get("baselines", []):
        if is_selfie(_method):
            try:
                selfie_interpreter(_method, _table["target"], MODELS)
            except ValueError as err:
                _key = "features.explain" + (".table4" if _name == "table4" else "") + ".baselines"
                raise WorkflowError(f"invalid configuration:\n  - {_key}: {err}") from None


rule features_selfie:
    """SelfIE: an untrained model (the target, or the one the method names) reads unit-norm v x each scale at
    its embedding layer (appendix F.1)."""
    input:
        evalsets=expand("results/{{target}}/features/eval/{evalset}.parquet", evalset=["sae", "act", "dact"]),
        model=lambda wc: model_dir(selfie_interpreter(wc.selfie, wc.target)),
    output:
        [f"results/{{target}}/features/predictions/{{selfie}}/{e}.parquet" for e in ("sae", "act", "dact")],
    wildcard_constraints:
        selfie="selfie(-(" + "|".join(map(re.escape, MODELS)) + "))?",
    params:
        code=library_code("features_selfie"),
        selfie=lambda wc: selfie_settings(),
        interpreter=lambda wc: selfie_interpreter(wc.selfie, wc.target),
        chat=lambda wc: MODELS[selfie_interpreter(wc.selfie, wc.target)].instruct,
        device=config["compute"]["device"],
        dtype=compute_dtype("features_selfie"),
    log:
        "logs/features_selfie/{target}/{selfie}.log",
    benchmark:
        "benchmarks/features_selfie/{target}/{selfie}.tsv"
    threads: sized_threads("features_selfie")
    resources:
        **sized("features_selfie", models=lambda wc: [selfie_interpreter(wc.selfie, wc.target)]),
    conda:
        "../envs/introspect.yaml"
    script:
        "../workflow_scripts/features_selfie.py"


rule features_score:
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
        code=library_code("features_score"),
        evalsets=lambda wc: method_eval_sets(wc.method),
        simulator=config["features"]["simulator"],
        judge=config["features"]["explain"]["judge"],
        width=config["features"]["exemplars"]["width"],
        n_top=config["features"]["exemplars"]["n_top"],
        cache_dir="resources/cache",
        device=config["compute"]["device"],
        dtype=compute_dtype("features_score"),
    log:
        "logs/features_score/{target}/{method}.log",
    benchmark:
        "benchmarks/features_score/{target}/{method}.tsv"
    threads: sized_threads("features_score")
    resources:
        **sized("features_score", models=lambda wc: simulator_models()),
    conda:
        "../envs/introspect.yaml"
    script:
        "../workflow_scripts/features_score.py"


rule table1:
    """Explainers and baselines on held-out SAE (judge, simulator), ACT and dACT (simulator): the paper's Table 1,
    with each row's recipe, training features (n_train) and invalid judge / simulator replies."""
    input:
        **table_inputs("table1"),
        # what the n_train and recipe columns read: each run's explainer.json, each NN baseline's bank.json
        explainers=expand("results/{target}/features/explainers/{run}", target=feature_tables()["table1"]["target"],
                          run=list(feature_tables()["table1"]["runs"])),
        banks=expand("results/{target}/features/predictions/{baseline}/bank.json",
                     target=feature_tables()["table1"]["target"],
                     baseline=[b for b in table_methods("table1") if b in ("nn_all", "nn_layer")]),
    output:
        csv="results/table1.csv",
        md="results/table1.md",
        html=report("results/table1.html", caption="../report/table1.rst",
                    category="Feature descriptions"),
    params:
        code=library_code("table1_4"),
        title="Table 1",
        methods=table_methods("table1"),
        metrics=["sae_judge", "sae_simulator", "act_simulator", "dact_simulator"],
        target=feature_tables()["table1"]["target"],
        judge=config["features"]["explain"]["judge"]["backend"],
        simulator=config["features"]["simulator"]["backend"],
        correlation=config["features"]["simulator"].get("correlation", "concatenated"),
        selfie_scales=selfie_settings()["scales"],
        runs=list(feature_tables()["table1"]["runs"]),
        # the recipe column's inputs besides a checkpoint's settings: what a pre-trained Pi_l was fitted onto, and
        # the explainer's hidden size
        run_settings={name: {"align": run.get("align", "depth"),
                             "explainer_hidden": MODELS[run["explainer"]].hidden_size}
                      for name, run in feature_tables()["table1"]["runs"].items()},
        banks=[b for b in table_methods("table1") if b in ("nn_all", "nn_layer")],
    log:
        "logs/table1.log",
    benchmark:
        "benchmarks/table1.tsv"
    resources:
        **sized("table1"),
    conda:
        "../envs/introspect.yaml"
    script:
        "../workflow_scripts/table1_4.py"


if "table4" in feature_tables():

    localrules:
        table4,

    rule table4:
        """A second target's features (paper appendix B.1): the SAE judge column, as the paper's Table 4."""
        input:
            **table_inputs("table4"),
            explainers=expand("results/{target}/features/explainers/{run}",
                              target=feature_tables()["table4"]["target"],
                              run=list(feature_tables()["table4"]["runs"])),
            banks=expand("results/{target}/features/predictions/{baseline}/bank.json",
                         target=feature_tables()["table4"]["target"],
                         baseline=[b for b in table_methods("table4") if b in ("nn_all", "nn_layer")]),
        output:
            csv="results/table4.csv",
            md="results/table4.md",
            html=report("results/table4.html", caption="../report/table4.rst",
                        category="Feature descriptions"),
        params:
            code=library_code("table1_4"),
            title="Table 4",
            methods=table_methods("table4"),
            metrics=["sae_judge"],
            target=feature_tables()["table4"]["target"],
            judge=config["features"]["explain"]["judge"]["backend"],
            simulator=config["features"]["simulator"]["backend"],
            correlation=config["features"]["simulator"].get("correlation", "concatenated"),
            selfie_scales=selfie_settings()["scales"],
            runs=list(feature_tables()["table4"]["runs"]),
            run_settings={name: {"align": run.get("align", "depth"),
                                 "explainer_hidden": MODELS[run["explainer"]].hidden_size}
                          for name, run in feature_tables()["table4"]["runs"].items()},
            banks=[b for b in table_methods("table4") if b in ("nn_all", "nn_layer")],
        log:
            "logs/table4.log",
        benchmark:
            "benchmarks/table4.tsv"
        resources:
            **sized("table4"),
        conda:
            "../envs/introspect.yaml"
        script:
            "../workflow_scripts/table1_4.py"


rule features_run_similarity:
    """Activation similarity of one Table 1 run's explainer to the target through the run's own trained Pi_l
    (identity without a projection), at the explainer layer Pi_l maps onto: Figure 6's x per run."""
    input:
        run="results/{target}/features/explainers/{run}",
        explainer=lambda wc: model_dir(feature_run(wc.run)["explainer"]),
        activations=lambda wc: expand("results/{{target}}/features/activations/layer{layer}.safetensors",
                                      layer=feature_layers(wc.target)),
        test="results/{target}/features/eval/sae.parquet",
        tokens="results/{target}/features/tokens.parquet",
    output:
        "results/{target}/features/similarity/runs/{run}.json",
    params:
        code=library_code("features_similarity"),
        layers=lambda wc: feature_layers(wc.target),
        n_target_layers=lambda wc: MODELS[wc.target].n_layers,
        explainer=lambda wc: feature_run(wc.run)["explainer"],
        run=lambda wc: wc.run,
        align=lambda wc: feature_run(wc.run).get("align", "depth"),
        projection_name=lambda wc: "none" if feature_run_projection(wc.run) == "none" else
        f"the run's trained Pi_l ({feature_run_projection(wc.run)} init)",
        similarity=config["features"]["similarity"],
        width=config["features"]["exemplars"]["width"],
        device=config["compute"]["device"],
        dtype=compute_dtype("features_run_similarity"),
    log:
        "logs/features_run_similarity/{target}/{run}.log",
    benchmark:
        "benchmarks/features_run_similarity/{target}/{run}.tsv"
    threads: sized_threads("features_run_similarity")
    resources:
        **sized("features_run_similarity", models=lambda wc: [feature_run(wc.run)["explainer"]]),
    conda:
        "../envs/introspect.yaml"
    script:
        "../workflow_scripts/features_similarity.py"


rule figure6:
    """Figure 6: each Table 1 run's scores vs the activation similarity to the target through its own Pi_l."""
    input:
        scores=[f"results/{feature_tables()['table1']['target']}/features/scores/{r}.parquet"
                for r in feature_tables()["table1"]["runs"]],
        similarities=[f"results/{feature_tables()['table1']['target']}/features/similarity/runs/{r}.json"
                      for r in feature_tables()["table1"]["runs"]],
    output:
        png=report("results/figure6.png", caption="../report/figure6.rst", category="Feature descriptions"),
        csv="results/figure6.csv",
    params:
        code=library_code("figure6"),
        methods=list(feature_tables()["table1"]["runs"]),
        target=feature_tables()["table1"]["target"],
    log:
        "logs/figure6.log",
    benchmark:
        "benchmarks/figure6.tsv"
    resources:
        **sized("figure6"),
    conda:
        "../envs/introspect.yaml"
    script:
        "../workflow_scripts/figure6.py"


if scaling():

    localrules:
        figure5_7,

    rule figure5_7:
        """Figures 5 and 7: scaling curves (judge on held-out SAE; simulator on SAE, ACT, dACT) over n_train."""
        input:
            [f"results/{feature_tables()['table1']['target']}/features/scores/{m}.parquet" for m in scaling_methods()],
        output:
            fig5=report("results/figure5.png", caption="../report/figure5.rst", category="Feature descriptions"),
            fig7=report("results/figure7.png", caption="../report/figure7.rst", category="Feature descriptions"),
            csv="results/figure5_7.csv",
        params:
            code=library_code("figure5_7"),
            methods=scaling_methods(),
            explainers={r: feature_run(r)["explainer"] for r in scaling().get("runs", [])},
            target=feature_tables()["table1"]["target"],
        log:
            "logs/figure5_7.log",
        benchmark:
            "benchmarks/figure5_7.tsv"
        resources:
            **sized("figure5_7"),
        conda:
            "../envs/introspect.yaml"
        script:
            "../workflow_scripts/figure5_7.py"
