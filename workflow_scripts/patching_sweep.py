"""Snakemake wrapper: run the patching sweep of one target and write its table and statistics."""

import json

import torch

from introspect.models.loading import load_stage_model
from introspect.groundtruth.patching import SweepSettings, patch_sweep, sweep_frame
from introspect.sources.facts import pairs_from_frame
from introspect.runlog import logged
from introspect.schemas import read_table, write_table

with logged(snakemake.log[0]) as log:  # noqa: F821 (injected by Snakemake)
    params = snakemake.params  # noqa: F821
    torch.set_num_threads(snakemake.threads)  # noqa: F821
    model, tokenizer, _, device = load_stage_model(snakemake.input.model, params.device, params.dtype,  # noqa: F821
                                                   rule=snakemake.rule, gpus="patching")  # noqa: F821
    log.info("patching sweep on %s", device)
    pairs = pairs_from_frame(read_table(snakemake.input.pairs, "patching_pairs"))  # noqa: F821
    settings = SweepSettings(
        prompt_format=params.prompt_format,
        chat=params.chat,
        chunks=tuple(map(tuple, params.chunks)),
        batch_size=snakemake.resources.forward_batch,  # noqa: F821 (a resource: editing it re-runs nothing)
        unknown_option=params.unknown_option,
        require_correct=params.require_correct,
        prefix=params.prefix,
    )
    columns, stats = patch_sweep(pairs, model, tokenizer, settings)
    write_table(sweep_frame(columns), snakemake.output.sweep, "patching_sweep")  # noqa: F821
    stats["interventions"] = len(columns["pair_id"])
    stats["changed"] = int(sum(columns["has_changed"]))
    log.info("sweep statistics: %s", stats)
    with open(snakemake.output.stats, "w") as out:  # noqa: F821
        json.dump(stats, out, indent=2, sort_keys=True)
