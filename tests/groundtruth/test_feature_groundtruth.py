"""Feature ground truth: windows, exemplars, candidate labels, equation-2 labelling, splits and eval sets."""

from __future__ import annotations

import random

import numpy as np
import polars as pl
import pytest
import torch

from introspect.groundtruth.evalsets import sample_positions, subject_final_index, vector_eval_set
from introspect.groundtruth.exemplars import (
    ExemplarSettings,
    FeaturesError,
    exemplar_frame,
    exemplars,
    halves,
    make_windows,
    sae_exemplars,
    to_exemplars,
)
from introspect import schemas
from introspect.groundtruth.labels import concepts, label_features, label_stats, token_candidates
from introspect.scoring.simulators import Exemplar


def tokens_frame(seqs: list[tuple[str, int]]) -> pl.DataFrame:
    """A tokens table: one sequence per (split, length), positions from 0, token text 't<row>'."""
    cols = {"seq_id": [], "doc_id": [], "split": [], "position": [], "token_id": [], "text": []}
    for seq_id, (split, length) in enumerate(seqs):
        for pos in range(length):
            row = len(cols["seq_id"])
            cols["seq_id"].append(seq_id)
            cols["doc_id"].append(f"d{seq_id}")
            cols["split"].append(split)
            cols["position"].append(pos)
            cols["token_id"].append(100 + row)
            cols["text"].append(f"t{row}")
    return pl.DataFrame(cols)


def test_make_windows_on_a_hand_made_table():
    tokens = tokens_frame([("eval", 10), ("train", 5), ("eval", 7)])
    windows = make_windows(tokens, 4)
    # seq 0: rows 1..9 usable (row 0 is position 0) -> [1-4], [5-8], row 9 dropped; seq 1 is train;
    # seq 2: rows 16..21 usable -> [16-19], rows 20, 21 dropped
    assert windows["window_id"].to_list() == [0, 1, 2]
    assert windows["seq_id"].to_list() == [0, 0, 2]
    assert windows["rows"].to_list() == [[1, 2, 3, 4], [5, 6, 7, 8], [16, 17, 18, 19]]
    assert windows["tokens"].to_list() == [["t1", "t2", "t3", "t4"], ["t5", "t6", "t7", "t8"],
                                           ["t16", "t17", "t18", "t19"]]
    assert make_windows(tokens, 9)["rows"].to_list() == [list(range(1, 10))]
    with pytest.raises(FeaturesError, match="no window of 10 tokens"):
        make_windows(tokens, 10)


def test_halves():
    assert halves(10, 14) == ([0, 2, 4, 6, 8, 10, 12], [1, 3, 5, 7, 9, 11, 13])
    assert halves(3, 5) == ([0, 2, 3], [1, 4])
    assert halves(2, 2) == ([0], [1])


# 8 eval sequences of 9 tokens: 8 usable each -> 2 windows of 4 -> 16 windows; window w holds rows
# 9 * (w // 2) + 1 + 4 * (w % 2) ... + 3
N_WINDOWS, WIDTH = 16, 4


@pytest.fixture()
def grid():
    tokens = tokens_frame([("eval", 9)] * 8 + [("train", 6)])
    windows = make_windows(tokens, WIDTH)
    assert windows.height == N_WINDOWS
    rng = np.random.default_rng(0)
    hidden = torch.from_numpy(rng.uniform(0, 1, size=(tokens.height, 3)).astype(np.float32))
    rows = windows["rows"].to_list()
    # item 0 peaks in windows 5 (9.0), 2 (7.0), 11 (5.0); item 1 in window 14 (3.0) then 0 (2.5);
    # item 2 is negative everywhere but window 7 (-0.5 at most)
    hidden[rows[5][2], 0] = 9.0
    hidden[rows[2][0], 0] = 7.0
    hidden[rows[11][3], 0] = 5.0
    hidden[rows[14][1], 1] = 3.0
    hidden[rows[0][3], 1] = 2.5
    hidden[:, 2] = -2.0
    hidden[rows[7][1], 2] = -0.5
    return tokens, windows, hidden


def test_exemplars_pick_the_top_windows_in_order(grid):
    tokens, windows, hidden = grid
    settings = ExemplarSettings(width=WIDTH, n_top=3, n_random=4)
    found = exemplars(hidden, windows, lambda h: h * 1.0, 3, settings, seed=0, progress=False)
    assert found["windows"].shape == (3, 7) and found["activations"].shape == (3, 7, WIDTH)
    assert found["windows"][0, :3].tolist() == [5, 2, 11]
    assert found["windows"][1, :2].tolist() == [14, 0]
    assert found["windows"][2, 0] == 7
    np.testing.assert_allclose(found["max_activation"], [9.0, 3.0, -0.5])
    rows = np.array(windows["rows"].to_list())
    for item in range(3):
        chosen = found["windows"][item]
        assert len(set(chosen.tolist())) == 7  # random windows differ from the top ones and each other
        for slot, w in enumerate(chosen):
            np.testing.assert_array_equal(found["activations"][item, slot], hidden[rows[w], item].numpy())
    # seeded: the same seed gives the same random windows, another seed other ones
    again = exemplars(hidden, windows, lambda h: h * 1.0, 3, settings, seed=0, progress=False)
    np.testing.assert_array_equal(again["windows"], found["windows"])
    other = exemplars(hidden, windows, lambda h: h * 1.0, 3, settings, seed=1, progress=False)
    assert other["windows"][:, 3:].tolist() != found["windows"][:, 3:].tolist()


def test_exemplars_do_not_depend_on_the_pass_size(grid):
    tokens, windows, hidden = grid
    whole = exemplars(hidden, windows, lambda h: 2 * h, 3, ExemplarSettings(width=WIDTH, n_top=3, n_random=4),
                      seed=3, progress=False)
    # 3 windows per encoder pass: the maxima and the activations are gathered over 6 passes
    small = ExemplarSettings(width=WIDTH, n_top=3, n_random=4, max_values=3 * WIDTH * 3)
    passes = exemplars(hidden, windows, lambda h: 2 * h, 3, small, seed=3, progress=False)
    for key in ("max_activation", "windows", "activations"):
        np.testing.assert_array_equal(passes[key], whole[key])
    assert whole["max_activation"][0] == pytest.approx(18.0)


def test_exemplars_need_enough_windows(grid):
    _, windows, hidden = grid
    with pytest.raises(FeaturesError, match="16 eval windows"):
        exemplars(hidden, windows, lambda h: h, 3, ExemplarSettings(width=WIDTH, n_top=10, n_random=7), 0, False)


def test_exemplar_frame_and_to_exemplars(grid):
    _, windows, hidden = grid
    found = exemplars(hidden, windows, lambda h: h * 1.0, 3, ExemplarSettings(width=WIDTH, n_top=2, n_random=1),
                      seed=0, progress=False)
    frame = exemplar_frame(4, [10, 11, 12], found, n_top=2)
    assert frame["feature"].to_list() == [10, 11, 12] and frame["layer"].unique().to_list() == [4]
    assert frame["kinds"][0].to_list() == ["top", "top", "random"]
    assert frame["windows"][0].to_list() == found["windows"][0].tolist()
    ex = to_exemplars(frame["windows"][0].to_list(), frame["activations"][0].to_list(), windows)
    assert ex[0].tokens == tuple(windows["tokens"][5]) and max(ex[0].activations) == 9.0


class FakeSAE:
    n_features = 3

    @staticmethod
    def encode(h):
        return torch.relu(h)


def test_sae_exemplars_drop_features_that_never_fire(grid):
    tokens, _, hidden = grid
    frame, stats = sae_exemplars(hidden, tokens, FakeSAE(), 6, ExemplarSettings(width=WIDTH, n_top=2, n_random=2),
                                 seed=0, progress=False)
    assert frame["feature"].to_list() == [0, 1]  # feature 2 is never above 0
    assert stats == {"layer": 6, "features": 3, "kept": 2, "dropped_no_activation": 1, "windows": 16,
                     "window_width": WIDTH}
    assert frame["max_activation"].to_list() == [9.0, 3.0]


def test_vector_eval_set_scores_windows_by_the_dot_product(grid):
    tokens, _, hidden = grid
    vectors = {2: np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]], dtype=np.float32)}
    frame = vector_eval_set("dact", vectors, ["a", "b"], {2: hidden}.__getitem__, tokens,
                            ExemplarSettings(width=WIDTH, n_top=2, n_random=1), seed=0, progress=False)
    assert frame["item_id"].to_list() == ["L2/dact/0", "L2/dact/1"]
    assert frame["source"].to_list() == ["a", "b"] and frame["label"].to_list() == [None, None]
    assert [w[:2] for w in frame["windows"].to_list()] == [[5, 2], [14, 0]]
    assert max(frame["activations"][1][0]) == pytest.approx(6.0)


def ex(tokens, acts):
    return Exemplar(tuple(tokens), tuple(acts))


def test_token_candidates_name_the_peak_tokens():
    exemplar_list = [
        ex([" the", " Cat", " sat"], [0.0, 1.0, 0.2]),
        ex([" a", " cat"], [0.2, 0.9]),
        ex([" dog", "."], [0.1, 2.0]),
        ex([" x", " "], [0.0, 3.0]),        # whitespace peak: no word
        ex([" y", " z"], [0.0, 0.0]),       # never fires
        ex([" dog", " bird"], [0.0, 5.0]),  # beyond n_top
    ]
    assert token_candidates(exemplar_list, n_top=5) == [
        'the word "cat"', 'the symbol "."', 'words such as "cat", "."']
    assert token_candidates(exemplar_list[:1], n_top=5) == ['the word "cat"']
    assert token_candidates(exemplar_list, n_top=6, n_words=1) == ['the word "cat"']
    assert token_candidates(exemplar_list[4:5], n_top=1) == []


class FakeSimulator:
    """score_many gives each candidate a fixed score (0 for unknown ones) and records what it was asked."""

    def __init__(self, scores):
        self.scores, self.calls, self.prepared = scores, [], None

    def prepare(self, windows):
        self.prepared = windows

    def score_many(self, descriptions, exemplar_list):
        self.calls.append((list(descriptions), list(exemplar_list)))
        return np.array([self.scores.get(d, 0.0) for d in descriptions], dtype=np.float64)


def test_label_features_picks_the_best_candidate(grid):
    _, windows, hidden = grid
    found = exemplars(hidden, windows, lambda h: h[:, :2], 2, ExemplarSettings(width=WIDTH, n_top=3, n_random=2),
                      seed=0, progress=False)
    table = exemplar_frame(1, [0, 1], found, n_top=3)
    pool = ["colours", "numbers", "animals", "the word \"t25\""]  # the last one repeats a token candidate
    sim = FakeSimulator({"numbers": 0.8, "animals": float("nan"), "colours": 0.3, 'the word "t53"': 0.9})
    labels = label_features(table, windows, sim, pool, n_top=3, seed=11, progress=False)
    assert sim.prepared == windows["tokens"].to_list()
    assert labels["feature"].to_list() == [0, 1]
    first = labels.row(0, named=True)
    # item 0's peaks in the selecting half of its top windows (slots 0 and 2): row 25 (window 5), row 53
    # (window 11); slot 1's peak (row 10) is in the check half and names no candidate
    assert first["candidates"] == ['the word "t25"', 'the word "t53"', 'words such as "t25", "t53"',
                                   "colours", "numbers", "animals"]
    assert first["label"] == 'the word "t53"' and first["score"] == 0.9
    np.testing.assert_array_equal(first["candidate_scores"], [0.0, 0.9, 0.0, 0.3, 0.8, np.nan])  # nan kept
    other = random.Random(11).randrange(6)
    assert first["random_candidate"] == first["candidates"][other]
    expected = first["candidate_scores"][other]
    assert first["random_score"] == (None if np.isnan(expected) else expected)
    assert first["check_score"] == 0.9
    # the first call scores on the selecting half (slots 0, 2 of the top, 3 of the random), the second
    # checks the chosen and the random candidate on the other half
    select_call, check_call = sim.calls[0], sim.calls[1]
    ex0 = to_exemplars(table["windows"][0].to_list(), table["activations"][0].to_list(), windows)
    assert select_call[1] == [ex0[0], ex0[2], ex0[3]] and check_call[1] == [ex0[1], ex0[4]]
    assert check_call[0] == ['the word "t53"', first["random_candidate"]]
    assert labels.row(1, named=True)["label"] == "numbers"  # item 1 has no t53 candidate
    stats = label_stats(labels)
    assert stats["labelled"] == 2 and stats["mean_score_chosen"] == pytest.approx(0.85)


def split_inputs(tmp_path, n=12, extra=2, layer=3, order=None):
    """One layer's labels, SAE vectors (n + extra features, in `order`) and exemplars, as files."""
    from introspect.groundtruth.evalsets import LayerFiles
    from introspect.schemas import write_table

    order = list(range(n + extra)) if order is None else order
    labels = pl.DataFrame({"layer": [layer] * n, "feature": list(range(n)), "label": [f"l{i}" for i in range(n)],
                           "score": [0.1 * i for i in range(n)], "check_score": [0.0] * n,
                           "random_candidate": [None] * n, "random_score": [None] * n,
                           "random_check_score": [None] * n, "candidates": [["c"]] * n,
                           "candidate_scores": [[0.5]] * n}, schema=schemas.FEATURE_LABELS)
    vectors = np.arange((n + extra) * 4, dtype=np.float32).reshape(n + extra, 4) / 7
    features = pl.DataFrame({"layer": [layer] * (n + extra), "feature": order, "vector": vectors[order]},
                            schema={"layer": pl.Int64, "feature": pl.Int64, "vector": pl.Array(pl.Float32, 4)})
    exemplar_table = pl.DataFrame({"layer": [layer] * n, "feature": list(range(n)), "max_activation": [1.0] * n,
                                   "windows": [[i, i + 1] for i in range(n)], "kinds": [["top", "random"]] * n,
                                   "activations": [[[1.0], [0.0]]] * n}, schema=schemas.FEATURE_EXEMPLARS)
    files = LayerFiles(tmp_path / f"labels{layer}.parquet", tmp_path / f"sae{layer}.parquet",
                       tmp_path / f"ex{layer}.parquet")
    write_table(labels, files.labels, "feature_labels")
    write_table(features, files.features, "feature_vectors")
    write_table(exemplar_table, files.exemplars, "feature_exemplars")
    return files, vectors


def test_split_holds_out_n_test_and_streams_train_vectors_to_a_row_file(tmp_path):
    from introspect.groundtruth.evalsets import split_feature_files
    from introspect.tensorfiles import RowFile

    n = 12
    files, vectors = split_inputs(tmp_path, n, order=[5, 0, 13, 1, 2, 3, 4, 6, 7, 8, 9, 10, 11, 12])
    train, test = split_feature_files([files], n_test=4, seed=0, vectors_path=tmp_path / "v.safetensors",
                                      budget_mb=64, progress=False)
    schemas.check_schema(train, "feature_train")
    schemas.check_schema(test, "feature_eval")
    assert test.height == 4 and train.height == n - 4
    test_ids, train_ids = set(test["item_id"]), set(train["item_id"])
    assert not test_ids & train_ids and test_ids | train_ids == {f"L3/f{i}" for i in range(n)}
    bank = RowFile(tmp_path / "v.safetensors")
    assert bank.shape == (n - 4, 4) and bank.dtype == np.float16 and train["row"].to_list() == list(range(n - 4))
    for feature, row in zip(train["feature"], train["row"]):  # in the SAE file's order, vector for vector
        assert bank.take([row])[0].tolist() == vectors[feature].astype(np.float16).tolist()
    assert train["feature"].to_list() == [f for f in [5, 0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 11] if f"L3/f{f}" in train_ids]
    for row in test.iter_rows(named=True):
        f = int(row["item_id"].split("/f")[1])
        assert row["label"] == f"l{f}" and row["source"] == f"sae feature {f}" and row["windows"] == [f, f + 1]
        assert list(row["vector"]) == vectors[f].tolist()  # float32, exact
    again_train, again_test = split_feature_files([files], 4, 0, tmp_path / "w.safetensors", progress=False)
    assert again_test.equals(test) and again_train.equals(train)
    assert (tmp_path / "v.safetensors").read_bytes() == (tmp_path / "w.safetensors").read_bytes()
    _, other_test = split_feature_files([files], 4, 1, tmp_path / "x.safetensors", progress=False)
    assert set(other_test["item_id"]) != test_ids
    with pytest.raises(FeaturesError, match="cannot hold out 12"):
        split_feature_files([files], 12, 0, tmp_path / "y.safetensors", progress=False)
    assert not (tmp_path / "y.safetensors").exists()


def test_split_of_several_layers_numbers_rows_across_layers_and_reads_safetensors(tmp_path):
    from safetensors.torch import load_file

    from introspect.groundtruth.evalsets import split_feature_files

    first, _ = split_inputs(tmp_path, 10, layer=1)
    second, vectors = split_inputs(tmp_path, 8, layer=4)
    train, test = split_feature_files([first, second], 2, 0, tmp_path / "v.safetensors", progress=False)
    assert train.group_by("layer", maintain_order=True).len().rows() == [(1, 8), (4, 6)]
    assert train["row"].to_list() == list(range(14))
    loaded = load_file(str(tmp_path / "v.safetensors"))["vectors"]  # an ordinary safetensors file
    last = train.row(-1, named=True)
    assert loaded.shape == (14, 4) and loaded[13].tolist() == vectors[last["feature"]].astype(np.float16).tolist()


def test_label_sample_reads_only_the_sampled_features(tmp_path):
    from introspect.groundtruth.evalsets import sample_features, sample_markdown, sample_rows
    from introspect.groundtruth.exemplars import make_windows

    files, _ = split_inputs(tmp_path, 12)
    picks = sample_features([files], 3, seed=0)
    assert picks.height == 3 and picks.equals(sample_features([files], 3, seed=0))
    labels, exemplar_rows = sample_rows([files], picks)
    assert labels.height == 3 and exemplar_rows.height == 3
    windows = make_windows(tokens_frame([("eval", 40)]), 2)
    text = sample_markdown(labels, exemplar_rows, windows)
    assert text.count("## Layer 3") == 3 and "**" in text


def test_sample_positions_are_usable_eval_rows():
    tokens = tokens_frame([("eval", 5), ("train", 5), ("eval", 5)])
    picked = sample_positions(tokens, 6, seed=0)
    assert picked.tolist() == sorted(picked.tolist()) and len(set(picked.tolist())) == 6
    assert set(picked.tolist()) <= {1, 2, 3, 4, 11, 12, 13, 14}
    with pytest.raises(FeaturesError, match="8 eval tokens"):
        sample_positions(tokens, 9, seed=0)


def test_subject_final_index():
    text = "Buenos Aires is the capital of"
    offsets = [(0, 3), (3, 6), (6, 12), (12, 15), (15, 19), (19, 27), (27, 30)]
    assert subject_final_index(text, "Buenos Aires", offsets) == 2
    assert subject_final_index(text, "Bue", offsets) == 0
    assert subject_final_index(text, "Buenos", offsets) == 1
    with pytest.raises(FeaturesError, match="not in"):
        subject_final_index(text, "Rome", offsets)
    with pytest.raises(FeaturesError, match="no token covers"):
        subject_final_index(text, "Aires", offsets[:2])


def test_concepts():
    pool = concepts()
    assert len(set(pool)) >= 100 and len(set(pool)) == len(pool)
    assert all(c == c.strip() and c and not c.startswith("#") for c in pool)
