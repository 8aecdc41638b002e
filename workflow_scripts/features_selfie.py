"""Snakemake wrapper: SelfIE descriptions (every scale kept as a candidate) of the three eval sets, by the
interpreting model the method names (the target for `selfie`, <model> for `selfie-<model>`)."""

import torch

from introspect.models.loading import load_stage_model
from introspect.runlog import logged
from introspect.schemas import read_table
from introspect.explainers.selfie import selfie_describe, selfie_frame

with logged(snakemake.log[0]) as log:  # noqa: F821 (injected by Snakemake)
    params = snakemake.params  # noqa: F821
    torch.set_num_threads(snakemake.threads)  # noqa: F821
    lm, tokenizer, _, _ = load_stage_model(snakemake.input.model, params.device, params.dtype,  # noqa: F821
                                         rule=snakemake.rule, gpus="train")  # noqa: F821
    log.info("SelfIE of %s's vectors read by %s (%s prompt)", snakemake.wildcards.target,  # noqa: F821
             params.interpreter, "instruct" if params.chat else "base")
    for path, out in zip(snakemake.input.evalsets, snakemake.output):  # noqa: F821
        items = read_table(path, "feature_eval")
        vectors = torch.from_numpy(items["vector"].to_numpy().copy())
        described = selfie_describe(lm, tokenizer, vectors, params.chat, params.selfie["scales"],
                                    params.selfie["max_new_tokens"], params.selfie["batch_size"])
        selfie_frame(items, described).write_parquet(out)
        log.info("%s: %d items x %d scales", path, items.height, len(described))
