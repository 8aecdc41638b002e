"""Snakemake wrapper: simulator (and, on held-out SAE features, judge) scores of one method on its eval sets."""

import polars as pl
import torch

from introspect.scoring.judges import judge_from_config
from introspect.scoring.features import candidate_texts, judge_best, simulator_scores
from introspect.groundtruth.exemplars import make_windows
from introspect.scoring.simulators import simulator_device, simulator_from_config
from introspect.runlog import logged
from introspect.schemas import read_table

with logged(snakemake.log[0]) as log:  # noqa: F821 (injected by Snakemake)
    params = snakemake.params  # noqa: F821
    inputs = snakemake.input  # noqa: F821
    torch.set_num_threads(snakemake.threads)  # noqa: F821
    windows = make_windows(read_table(inputs.tokens, "feature_tokens"), params.width)
    # The finetuned simulator is loaded and run on compute.device; openai sends `concurrency` requests at once.
    device = simulator_device(params.simulator, params.device, snakemake.rule)  # noqa: F821
    simulator = simulator_from_config(params.simulator, f"{params.cache_dir}/simulator", device)
    rows = {"item_id": [], "metric": [], "value": []}
    for evalset, items_path, predictions_path in zip(params.evalsets, inputs.evalsets, inputs.predictions):
        items = read_table(items_path, "feature_eval")
        texts = candidate_texts(items, pl.read_parquet(predictions_path), predictions_path)
        rows["item_id"] += items["item_id"].to_list()
        rows["metric"] += [f"{evalset}_simulator"] * items.height
        rows["value"] += simulator_scores(items, texts, windows, simulator, params.n_top)
        if evalset == "sae":
            judge = judge_from_config(params.judge, f"{params.cache_dir}/judge")  # openai: `concurrency` in flight
            judged = judge_best(judge, texts, items["label"].to_list())  # all texts in one batch
            if hasattr(judge, "http_requests"):
                log.info("judge: %d requests sent (retries included), %d cached replies, %d invalid replies",
                         judge.http_requests, judge.cache_hits, judge.invalid_replies)
            invalid = sum(v is None for v in judged)
            if invalid:
                log.warning("%d items had only invalid judge replies; they score 0", invalid)
            rows["item_id"] += items["item_id"].to_list()
            rows["metric"] += ["sae_judge"] * items.height
            rows["value"] += [0.0 if v is None else v for v in judged]
    if hasattr(simulator, "http_requests"):
        log.info("simulator: %d requests sent (retries included), %d cached replies, %d invalid replies",
                 simulator.http_requests, simulator.cache_hits, simulator.invalid_replies)
    scores = pl.DataFrame(rows, schema={"item_id": pl.String, "metric": pl.String, "value": pl.Float64})
    log.info("%s: %s", snakemake.wildcards.method, scores.group_by("metric").agg(pl.col("value").mean()).rows())  # noqa: F821
    scores.write_parquet(snakemake.output[0])  # noqa: F821
