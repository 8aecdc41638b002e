"""Snakemake wrapper: materialise a registry model as an HF folder (with the GGUF logits check)."""

from introspect.models.registry import ModelSpec
from introspect.models.materialise import materialise_model
from introspect.runlog import logged

with logged(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    materialise_model(
        ModelSpec(**snakemake.params.spec),  # noqa: F821
        tokenizer_dir=snakemake.input.tokenizer,  # noqa: F821
        out_dir=snakemake.output[0],  # noqa: F821
        check_prompt=snakemake.params.check_prompt,  # noqa: F821 (None: no GGUF to check against)
        logits_atol=snakemake.params.logits_atol,  # noqa: F821
    )
