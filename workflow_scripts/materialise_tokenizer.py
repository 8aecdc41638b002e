"""Snakemake wrapper: write a registry model's tokenizer as an HF folder."""

from introspect.models.registry import TokenizerSpec
from introspect.models.materialise import materialise_tokenizer
from introspect.runlog import logged

with logged(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    materialise_tokenizer(TokenizerSpec(**snakemake.params.spec), snakemake.output[0])  # noqa: F821
