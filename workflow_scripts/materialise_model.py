"""Snakemake wrapper: materialise a registry model as an HF folder (with the GGUF logits check)."""

from introspect.models.registry import ModelSpec
from introspect.models.materialise import materialise_model
from introspect.runlog import logged

with logged(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    materialise_model(
        ModelSpec(**snakemake.params.spec),  # noqa: F821
        tokenizer_dir=snakemake.input.tokenizer,  # noqa: F821
        out_dir=snakemake.output[0],  # noqa: F821
        # None for a model without a GGUF to check against (the rule passes the check only where it is made)
        **{k: v for k in ("check_prompt", "logits_atol") if (v := snakemake.params.get(k)) is not None},  # noqa: F821
    )
