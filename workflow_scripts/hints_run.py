"""Snakemake wrapper: one target's answers to every question without and with a hint."""

import json

import torch

from introspect.groundtruth.hints import HintSettings, run_hints, run_stats
from introspect.models.loading import load_stage_model
from introspect.runlog import logged
from introspect.schemas import read_table, write_table

with logged(snakemake.log[0]) as log:  # noqa: F821 (injected by Snakemake)
    params = snakemake.params  # noqa: F821
    torch.set_num_threads(snakemake.threads)  # noqa: F821
    model, tokenizer, _, device = load_stage_model(snakemake.input.model, params.device, params.dtype,  # noqa: F821
                                                   rule=snakemake.rule, gpus="hints")  # noqa: F821
    log.info("hint runs on %s", device)
    questions = read_table(snakemake.input.questions, "hints_questions")  # noqa: F821
    settings = HintSettings(hint_format=params.hint_format, chat=params.chat, seed=params.seed,
                            batch_size=snakemake.resources.forward_batch)  # noqa: F821 (a resource: re-runs nothing)
    runs = run_hints(questions, model, tokenizer, settings)
    write_table(runs, snakemake.output.runs, "hints_runs")  # noqa: F821
    stats = run_stats(runs)
    log.info("run statistics: %s", stats)
    with open(snakemake.output.stats, "w") as out:  # noqa: F821
        json.dump(stats, out, indent=2, sort_keys=True)
