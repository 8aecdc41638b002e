"""Explainer training on several ranks (2 gloo ranks on the CPU), checkpoints and resume after a kill."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from conftest import REPO, tiny_llama
from safetensors.torch import load_file

from introspect.explainers.distributed import job_ranks, launch, shard
from introspect.explainers.features import train_feature_explainer

TRAIN = {"tuning": "full", "lr": 1e-3, "epochs": 2, "batch_size": 3, "grad_accum": 1}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, smollm2_tokenizer_dir) -> Path:
    return tiny_llama(tmp_path_factory.mktemp("dist") / "tiny", smollm2_tokenizer_dir, n_layers=2)


def features(n: int = 22, d: int = 16) -> pl.DataFrame:
    rng = np.random.default_rng(0)
    words = ["cats", "numbers", "the word \"of\"", "cities", "colours"]
    return pl.DataFrame({
        "item_id": [f"f{i}" for i in range(n)], "layer": [i % 2 for i in range(n)], "feature": list(range(n)),
        "vector": rng.normal(size=(n, d)).astype(np.float32), "label": [words[i % 5] for i in range(n)],
        "score": [0.5] * n,
    }, schema_overrides={"vector": pl.Array(pl.Float32, d)})


def kwargs(tiny: Path, out: Path, **train) -> dict:
    return dict(train=features(), model_dir=str(tiny), out_dir=str(out), target_hidden=16, projection="random",
                chat=False, settings={**TRAIN, **train}, seed=0, device="cpu")


def weights(folder: Path) -> dict[str, torch.Tensor]:
    out = load_file(folder / "lm" / "model.safetensors")
    out |= {f"proj.{k}": v for k, v in load_file(folder / "projections.safetensors").items()}
    return out


def test_shards_are_disjoint_and_cover_the_step():
    group = list(range(7))
    parts = [shard(group, r, 3) for r in range(3)]
    assert sorted(sum(parts, [])) == group and parts == [[0, 3, 6], [1, 4], [2, 5]]
    assert job_ranks("cuda", 4, 2) == 4 and job_ranks("cpu", 4, 2) == 2 and job_ranks("cpu", 0, 1) == 1


def test_two_ranks_take_the_steps_of_one_rank_with_the_same_global_batch(tiny, tmp_path, caplog):
    one = launch(train_feature_explainer, kwargs(tiny, tmp_path / "one", grad_accum=2), ranks=1)
    with caplog.at_level("INFO"):
        two = launch(train_feature_explainer, kwargs(tiny, tmp_path / "two"), ranks=2, threads=2)
    assert "world size 2: global batch 6 = 2 ranks x micro-batch 3 x grad_accum 1" in caplog.text
    assert len(one) == len(two) == 8  # 22 examples, micro-batches of 3: 8 per epoch, 2 per step, 2 epochs
    np.testing.assert_allclose(one, two, rtol=1e-5)
    a, b = weights(tmp_path / "one"), weights(tmp_path / "two")
    assert a.keys() == b.keys()
    for name in a:  # the sum over ranks adds the same numbers in another order: equal to float rounding
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6, msg=name)
    assert not (tmp_path / "two.resume").exists()  # the checkpoint folder goes once the model is saved


def test_two_trainings_of_two_ranks_at_once_both_finish(tiny, tmp_path):
    errors = []

    def run(name):
        try:
            launch(train_feature_explainer, kwargs(tiny, tmp_path / name, epochs=1), ranks=2, threads=1)
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert not errors, errors
    assert (tmp_path / "a" / "explainer.json").exists() and (tmp_path / "b" / "explainer.json").exists()


JOB = '''
import logging
import sys
logging.basicConfig(level=logging.INFO)
sys.path.insert(0, {tests!r})
from pathlib import Path
from explainers.test_distributed import features, kwargs
from introspect.explainers.distributed import launch
from introspect.explainers.features import train_feature_explainer

tiny, out, every, ranks, engine = sys.argv[1:]
engine = dict(engine="deepspeed", deepspeed_config={zero3!r}) if engine == "deepspeed" else {{}}
args = kwargs(Path(tiny), Path(out), epochs=2, batch_size=2, **engine)
args["train"] = features(24)  # 12 micro-batches: whole DeepSpeed steps on 2 ranks
launch(train_feature_explainer, {{**args, "checkpoint_every": int(every)}}, ranks=int(ranks), threads=2)
'''


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.stdout.read()
        assert time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.05)


@pytest.mark.parametrize("ranks,engine,how", [(1, "torch", signal.SIGKILL), (1, "torch", signal.SIGTERM),
                                              (2, "deepspeed", signal.SIGKILL), (2, "torch", signal.SIGTERM)])
def test_a_killed_training_resumes_to_the_uninterrupted_weights(tiny, tmp_path, ranks, engine, how):
    # the whole process group is signalled, as SLURM signals every process of a job step; ZeRO-3 resumes from
    # every rank's shard
    script = tmp_path / "job.py"
    script.write_text(JOB.format(tests=str(REPO / "tests"), zero3=str(REPO / "configs/deepspeed/zero3.json")))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "tests"), str(REPO / "lib")]))

    def start(out: Path, every: int) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, str(script), str(tiny), str(out), str(every), str(ranks), engine],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)

    straight = start(tmp_path / "straight", 0)
    assert straight.wait(timeout=900) == 0, straight.stdout.read()[-3000:]
    out = tmp_path / "killed"
    proc = start(out, 4)
    _wait_for(Path(f"{out}.resume") / "state.pt", proc, timeout=600)
    os.killpg(proc.pid, how)
    proc.wait(timeout=600)
    text = proc.stdout.read()
    assert proc.returncode != 0 and not (out / "explainer.json").exists(), text[-3000:]
    if how == signal.SIGTERM:
        assert "TrainingInterrupted" in text and "resumes it when the job runs again" in text, text[-3000:]
    again = start(out, 4)
    assert again.wait(timeout=900) == 0
    text = again.stdout.read()
    assert "resumed from" in text, text[-3000:]
    a, b = weights(tmp_path / "straight"), weights(out)
    for name in a:
        if ranks == 1:  # bitwise on the CPU
            assert torch.equal(a[name], b[name]), name
        else:  # the sum over ranks: to float rounding
            torch.testing.assert_close(a[name], b[name], rtol=1e-6, atol=1e-7, msg=name)
    assert not Path(f"{out}.resume").exists()


@pytest.mark.parametrize("tuning", ["full", "lora"])
def test_zero3_on_two_ranks_saves_a_gathered_checkpoint_equal_to_plain_training(tiny, tmp_path, tuning):
    from introspect.explainers.model import load_explainer

    setup = dict(epochs=1, batch_size=2, tuning=tuning, lora_r=4)
    plain, zero3 = kwargs(tiny, tmp_path / "plain", **setup), kwargs(
        tiny, tmp_path / "zero3", **setup, engine="deepspeed", deepspeed_config=str(REPO / "configs/deepspeed/zero3.json"))
    plain["train"] = zero3["train"] = features(24)  # 12 micro-batches: whole steps of 2 ranks x 1
    a = launch(train_feature_explainer, plain, ranks=2, threads=2)
    b = launch(train_feature_explainer, zero3, ranks=2, threads=2)
    np.testing.assert_allclose(a, b, rtol=1e-5)
    if tuning == "full":
        wa, wb = weights(tmp_path / "plain"), weights(tmp_path / "zero3")
    else:
        wa = load_file(tmp_path / "plain" / "lm" / "adapter_model.safetensors")
        wb = load_file(tmp_path / "zero3" / "lm" / "adapter_model.safetensors")
        wa |= load_file(tmp_path / "plain" / "projections.safetensors")
        wb |= load_file(tmp_path / "zero3" / "projections.safetensors")
    assert wa.keys() == wb.keys()
    for name in wa:
        torch.testing.assert_close(wa[name], wb[name], rtol=1e-5, atol=1e-6, msg=name)
    load_explainer(tmp_path / "zero3")  # an ordinary checkpoint folder


def test_gradient_checkpointing_gives_the_same_weights(tiny, tmp_path):
    launch(train_feature_explainer, kwargs(tiny, tmp_path / "plain", epochs=1), ranks=1)
    launch(train_feature_explainer, kwargs(tiny, tmp_path / "ckpt", epochs=1, gradient_checkpointing=True), ranks=1)
    a, b = weights(tmp_path / "plain"), weights(tmp_path / "ckpt")
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-6, atol=1e-7, msg=name)


def test_training_from_the_train_vectors_file_equals_training_from_the_table(tiny, tmp_path):
    """features_train reads vectors a batch at a time from the float16 row file that features_split writes;
    with vectors that float16 holds exactly, that is the same training as from an in-memory vector column."""
    from introspect.tensorfiles import RowFileWriter

    table = features().with_columns(pl.col("vector").arr.eval(pl.element().round(2)))
    vectors = np.asarray(table["vector"].to_list(), dtype=np.float16).astype(np.float32)
    table = table.with_columns(pl.Series("vector", vectors).cast(pl.Array(pl.Float32, 16)))
    order = np.random.default_rng(1).permutation(table.height)  # rows of the file in another order
    with RowFileWriter(tmp_path / "v.safetensors", table.height, 16) as out:
        out.write(vectors[np.argsort(order)])
    from_file = table.drop("vector").with_columns(pl.Series("row", order))
    a = launch(train_feature_explainer, {**kwargs(tiny, tmp_path / "table", epochs=1), "train": table}, ranks=1)
    b = launch(train_feature_explainer, {**kwargs(tiny, tmp_path / "file", epochs=1), "train": from_file,
                                         "vectors": str(tmp_path / "v.safetensors")}, ranks=1)
    assert a == b
    for name, tensor in weights(tmp_path / "table").items():
        assert torch.equal(tensor, weights(tmp_path / "file")[name]), name


def test_lazily_encoded_feature_items_equal_the_eager_encoding(tiny):
    from introspect.explainers.features import FEATURE_PROMPTS, feature_examples, feature_question
    from transformers import AutoTokenizer

    from introspect.explainers.model import add_vector_tokens, encode

    tokenizer = AutoTokenizer.from_pretrained(tiny)
    add_vector_tokens(tokenizer)
    table = features()
    data = feature_examples(table, tokenizer, chat=False, seed=3)
    rng = random.Random(3)
    for i, (layer, label) in enumerate(zip(table["layer"], table["label"])):
        question = feature_question(rng.choice(FEATURE_PROMPTS), layer)
        assert data.items[i] == encode(tokenizer, question, label, chat=False)
    digest = data.items.digest()
    assert len(data.items) == table.height and digest == feature_examples(table, tokenizer, False, 3).items.digest()
    assert digest != feature_examples(table, tokenizer, False, 4).items.digest()


def test_bfloat16_training_keeps_float32_weights_and_follows_the_float32_run(tiny, tmp_path, caplog):
    """compute.dtype bfloat16: autocast matmuls over float32 master weights; the losses stay close to float32's
    and the checkpoint records the precision."""
    import json

    a = launch(train_feature_explainer, kwargs(tiny, tmp_path / "fp32", epochs=1), ranks=1)
    with caplog.at_level("INFO"):
        b = launch(train_feature_explainer, {**kwargs(tiny, tmp_path / "bf16", epochs=1),
                                             "settings": {**TRAIN, "epochs": 1, "compute_dtype": "bfloat16"}},
                   ranks=1)
    assert "precision: bfloat16 autocast over float32 weights" in caplog.text
    np.testing.assert_allclose(a, b, rtol=0.02)
    assert all(t.dtype == torch.float32 for t in weights(tmp_path / "bf16").values())
    meta = json.loads((tmp_path / "bf16" / "explainer.json").read_text())
    assert meta["metadata"]["train_dtype"] == "bfloat16"
