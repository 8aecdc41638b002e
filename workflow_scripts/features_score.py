"""Snakemake wrapper: simulator (and, on held-out SAE features, judge) scores of one method on its eval sets."""

import polars as pl
import torch

from introspect.groundtruth.exemplars import make_windows
from introspect.runlog import logged
from introspect.schemas import read_table
from introspect.scoring.features import score_method
from introspect.scoring.judges import judge_from_config
from introspect.scoring.simulators import simulator_device, simulator_from_config

with logged(snakemake.log[0]) as log:  # noqa: F821 (injected by Snakemake)
    params = snakemake.params  # noqa: F821
    inputs = snakemake.input  # noqa: F821
    torch.set_num_threads(snakemake.threads)  # noqa: F821
    windows = make_windows(read_table(inputs.tokens, "feature_tokens"), params.width)
    # The finetuned simulator is loaded and run on compute.device; openai sends `concurrency` requests at once.
    device = simulator_device(params.simulator, params.device, snakemake.rule)  # noqa: F821
    simulator = simulator_from_config(params.simulator, f"{params.cache_dir}/simulator", device)
    judge = judge_from_config(params.judge, f"{params.cache_dir}/judge") if "sae" in params.evalsets else None
    evalsets = [(name, read_table(items, "feature_eval"), pl.read_parquet(predictions), predictions)
                for name, items, predictions in zip(params.evalsets, inputs.evalsets, inputs.predictions)]
    scores = score_method(evalsets, windows, simulator, judge, params.n_top)
    for role, client in (("simulator", simulator), ("judge", judge)):
        if hasattr(client, "http_requests"):
            log.info("%s: %d requests sent (retries included), %d cached replies, %d invalid replies (not cached)",
                     role, client.http_requests, client.cache_hits, client.invalid_replies)
    summary = scores.group_by("metric", maintain_order=True).agg(pl.col("value").mean(), pl.col("n_invalid").sum())
    log.info("%s (simulator score: %s): (metric, mean, invalid replies) %s", snakemake.wildcards.method,  # noqa: F821
             simulator.correlation, summary.rows())
    scores.write_parquet(snakemake.output[0])  # noqa: F821
