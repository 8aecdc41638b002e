"""Multiple-choice questions: the builtin generator, MMLU CSV folders, question files, backends and tables."""

from __future__ import annotations

import collections
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from conftest import REPO

from introspect.sources.facts import first_word
from introspect.sources.questions import (
    LETTERS,
    Question,
    QuestionsError,
    builtin_capacity,
    builtin_questions,
    load_mmlu_csv,
    load_mmlu_dir,
    load_question_file,
    load_questions,
    questions_frame,
    questions_from_frame,
)

MMLU = REPO.parent / "shared/realdata/mmlu/test"


@pytest.fixture(scope="module")
def builtin() -> list[Question]:
    return builtin_questions()


# --------------------------------------------------------------------------------------------------
# builtin generator


def test_builtin_size_and_families(builtin):
    assert len(builtin) == 1200
    assert builtin_capacity() >= 1000
    families = collections.Counter(q.subject.split("/")[0] for q in builtin)
    assert set(families) == {"facts", "arithmetic", "units", "calendar"}
    relations = {q.subject for q in builtin if q.subject.startswith("facts/")}
    assert {"facts/capital_of", "facts/country_capital", "facts/animal_class"} <= relations
    small = collections.Counter(q.subject.split("/")[0] for q in builtin_questions(40))
    assert small == {"facts": 10, "arithmetic": 10, "units": 10, "calendar": 10}  # families take turns


def test_builtin_deterministic_across_processes(builtin):
    assert builtin_questions() == builtin
    assert builtin_questions(seed=1) != builtin
    code = ("from introspect.sources.questions import builtin_questions, questions_frame;"
            "print(questions_frame(builtin_questions(300, seed=5)).write_csv())")
    outputs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                              env={**os.environ, "PYTHONHASHSEED": str(h)}).stdout for h in (1, 2)}
    assert len(outputs) == 1


@pytest.mark.parametrize("n", [1200, 1001, 7, 0])
def test_builtin_answer_balance(n):
    counts = collections.Counter(q.answer for q in builtin_questions(n, seed=3))
    values = [counts.get(letter, 0) for letter in LETTERS]
    assert sum(values) == n
    assert max(values) - min(values) <= (0 if n % 4 == 0 else 1)


def test_builtin_options_distinct_and_correct():
    questions = builtin_questions(builtin_capacity())
    assert len({q.question_id for q in questions}) == len(questions)
    assert len({q.question for q in questions}) == len(questions)
    for q in questions:
        assert len(q.options) == 4 and len({first_word(o) for o in q.options}) == 4, q
        assert all(o.strip() == o and o for o in q.options), q
    by_id = {q.question_id: q for q in questions}
    assert by_id["calendar/0"].question == "Which month comes after January?"
    assert by_id["calendar/0"].correct == "February"
    sums = [q for q in questions if " + " in q.question]
    assert len(sums) == 400
    for q in sums:
        a, b = (int(x) for x in q.question.removeprefix("What is ").removesuffix("?").split(" + "))
        assert q.correct == str(a + b)
    capital = next(q for q in questions if q.question == "Paris is the capital of which country?")
    assert capital.correct == "France" and capital.subject == "facts/capital_of"
    units = next(q for q in questions if q.question == "How many centimetres are in 3 metres?")
    assert units.correct == "300" and units.subject == "units"


def test_builtin_too_many():
    capacity = builtin_capacity()
    assert len(builtin_questions(capacity)) == capacity
    with pytest.raises(QuestionsError, match=f"at most {capacity}"):
        builtin_questions(capacity + 1)


def test_question_rendering():
    q = Question("x/0", "x", "What is 2 + 2?", ("3", "4", "5", "6"), "B")
    assert q.choices == "A. 3\nB. 4\nC. 5\nD. 6"
    assert q.prompt == "What is 2 + 2?\nA. 3\nB. 4\nC. 5\nD. 6"
    assert q.correct == "4"
    with pytest.raises(QuestionsError, match="not one of A, B, C, D"):
        Question("x/0", "x", "?", ("a", "b", "c", "d"), "E")


# --------------------------------------------------------------------------------------------------
# MMLU CSV folders


ROWS = [
    ["What is 1, 2, 3's sum?", "6", "5", "4, or 3", "7", "A"],
    ["Which line\nbreaks here?", 'a "quoted" one', "b", "c", "d", "D"],
]


def _csv(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(rows)
    return path


@pytest.fixture()
def mmlu_root(tmp_path) -> Path:
    _csv(tmp_path / "mmlu" / "test" / "algebra_test.csv", ROWS)
    _csv(tmp_path / "mmlu" / "test" / "biology_test.csv", [["What is DNA?", "acid", "sugar", "salt", "fat", "A"]])
    _csv(tmp_path / "mmlu" / "dev" / "algebra_dev.csv", [["Dev?", "a", "b", "c", "d", "C"]])
    return tmp_path / "mmlu"


def test_mmlu_dir_loads(mmlu_root):
    questions = load_mmlu_dir(mmlu_root)
    assert [q.question_id for q in questions] == ["algebra/0", "algebra/1", "biology/0"]
    first, second, third = questions
    assert first.question == "What is 1, 2, 3's sum?" and first.options[2] == "4, or 3" and first.answer == "A"
    assert second.question == "Which line\nbreaks here?" and second.options[0] == 'a "quoted" one'
    assert second.answer == "D" and second.subject == "algebra"
    assert third.subject == "biology" and third.correct == "acid"
    assert load_mmlu_dir(mmlu_root, ["biology"]) == [third]
    assert [q.question for q in load_mmlu_dir(mmlu_root, None, "dev")] == ["Dev?"]
    assert load_mmlu_dir(mmlu_root / "test") == questions  # the split folder itself
    assert load_mmlu_csv(mmlu_root / "test" / "algebra_test.csv") == questions[:2]


def _message(call, *args) -> str:
    with pytest.raises(QuestionsError) as info:
        call(*args)
    return str(info.value)


def test_mmlu_csv_errors(tmp_path):
    path = _csv(tmp_path / "short_test.csv", [ROWS[0], ["Q?", "a", "b", "c", "A"]])
    message = _message(load_mmlu_csv, path)
    assert "short_test.csv row 2" in message and "missing column" in message
    path = _csv(tmp_path / "long_test.csv", [ROWS[0] + ["extra"]])
    message = _message(load_mmlu_csv, path)
    assert "long_test.csv row 1" in message and "extra column" in message
    path = _csv(tmp_path / "answer_test.csv", ROWS + [["Q?", "a", "b", "c", "d", "E"]])
    message = _message(load_mmlu_csv, path)
    assert "answer_test.csv row 3" in message and "'E'" in message and "A-D" in message
    path = tmp_path / "empty_test.csv"
    path.write_text("")
    message = _message(load_mmlu_csv, path)
    assert "empty_test.csv" in message and "empty" in message and "row 1" in message
    path = tmp_path / "quote_test.csv"
    path.write_text('Q?,a,b,c,d,A\n"unterminated,a,b,c,d,A\n')
    assert "quote_test.csv row 2" in _message(load_mmlu_csv, path)


def test_mmlu_dir_errors(mmlu_root):
    message = _message(load_mmlu_dir, mmlu_root, ["chemistry"])
    assert "chemistry_test.csv" in message and "algebra, biology" in message
    message = _message(load_mmlu_dir, mmlu_root, None, "val")
    assert "val" in message and "no such folder" in message and "['dev', 'test']" in message


# --------------------------------------------------------------------------------------------------
# question files


FLAT = [{"question": "2 + 2?", "A": "3", "B": "4", "C": "5", "D": "6", "answer": "B"},
        {"question": "Sky?", "A": "red", "B": "green", "C": "blue", "D": 7, "answer": "c",
         "subject": "nature", "question_id": "sky"}]
HF_SHAPE = [{"question": "2 + 2?", "subject": "math", "choices": ["3", "4", "5", "6"], "answer": 1},
            {"question": "3 + 3?", "subject": "math", "choices": ["6", "4", "5", "7"], "answer": 0}]


def _write(path: Path, records) -> Path:
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    elif path.suffix == ".parquet":
        keys = list(dict.fromkeys(key for record in records for key in record))
        text = lambda key, value: value if value is None or key in ("choices", "answer") else str(value)  # noqa: E731
        pl.DataFrame([{key: text(key, r.get(key)) for key in keys} for r in records]).write_parquet(path)
    else:
        path.write_text(json.dumps(records))
    return path


@pytest.mark.parametrize("suffix", [".json", ".jsonl", ".parquet"])
def test_question_file_flat(tmp_path, suffix):
    questions = load_question_file(_write(tmp_path / f"mine{suffix}", FLAT))
    assert questions == [Question("mine/0", "mine", "2 + 2?", ("3", "4", "5", "6"), "B"),
                         Question("sky", "nature", "Sky?", ("red", "green", "blue", "7"), "C")]


@pytest.mark.parametrize("suffix", [".json", ".jsonl", ".parquet"])
def test_question_file_hf_shape(tmp_path, suffix):
    questions = load_question_file(_write(tmp_path / f"hf{suffix}", HF_SHAPE))
    assert [(q.question_id, q.subject, q.answer, q.correct) for q in questions] == [
        ("math/0", "math", "B", "4"), ("math/1", "math", "A", "6")]


def test_question_file_errors(tmp_path):
    records = json.loads(json.dumps(FLAT))
    del records[1]["C"]
    message = _message(load_question_file, _write(tmp_path / "bad.json", records))
    assert "bad.json record 1" in message and "'C' is missing" in message
    records = json.loads(json.dumps(HF_SHAPE))
    records[0]["answer"] = 4
    message = _message(load_question_file, _write(tmp_path / "bad.jsonl", records))
    assert "bad.jsonl record 0" in message and "'answer' is 4" in message
    records[0]["answer"], records[1]["choices"] = 1, ["a", "b", "c"]
    message = _message(load_question_file, _write(tmp_path / "three.json", records))
    assert "three.json record 1" in message and "'choices' is 3 options" in message
    records = [dict(FLAT[0], question=["not", "text"])]
    assert "'question' is list" in _message(load_question_file, _write(tmp_path / "list.json", records))
    (tmp_path / "broken.jsonl").write_text(json.dumps(FLAT[0]) + "\n{oops\n")
    assert "broken.jsonl line 2: not valid JSON" in _message(load_question_file, tmp_path / "broken.jsonl")
    (tmp_path / "empty.json").write_text("[]")
    assert "empty.json: the file has no records" in _message(load_question_file, tmp_path / "empty.json")
    assert "no such file" in _message(load_question_file, tmp_path / "missing.json")


# --------------------------------------------------------------------------------------------------
# backends and tables


def test_load_questions_dispatch(tmp_path, mmlu_root):
    assert load_questions("builtin", n=20, seed=2) == builtin_questions(20, seed=2)
    assert len(load_questions("builtin")) == 1200
    assert len(load_questions("builtin", n=builtin_capacity())) == builtin_capacity()
    assert f"the builtin generator makes {builtin_capacity()}" in _message(  # an error, not a silent cap
        lambda: load_questions("builtin", n=10**6))
    assert load_questions("files", path=mmlu_root) == load_mmlu_dir(mmlu_root)
    assert load_questions("files", path=mmlu_root, split="dev")[0].question == "Dev?"
    csv_path = mmlu_root / "test" / "algebra_test.csv"
    assert load_questions("files", path=csv_path) == load_mmlu_csv(csv_path)
    path = _write(tmp_path / "mine.jsonl", FLAT)
    assert [q.question_id for q in load_questions("files", path=path, subjects=["nature"])] == ["sky"]
    assert "no questions of subject(s) art" in _message(
        lambda: load_questions("files", path=path, subjects=["art"]))
    assert "needs a path" in _message(lambda: load_questions("files"))
    assert "unknown question backend 'web'" in _message(lambda: load_questions("web"))


def test_load_questions_subsample(tmp_path):
    records = [dict(FLAT[0], question=f"Q{i}?") for i in range(50)]
    path = _write(tmp_path / "many.json", records)
    sample = load_questions("files", path=path, n=10, seed=1)
    assert len(sample) == 10 and sample == load_questions("files", path=path, n=10, seed=1)
    indices = [int(q.question_id.split("/")[1]) for q in sample]
    assert indices == sorted(indices) and len(set(indices)) == 10
    assert sample != load_questions("files", path=path, n=10, seed=2)
    assert "hints.questions.n: 80 questions asked, but" in _message(  # fewer exist: an error, not a cap
        lambda: load_questions("files", path=path, n=80))
    assert len(load_questions("files", path=path, n=50)) == 50


@pytest.fixture()
def uneven_mmlu(tmp_path) -> Path:
    """An MMLU CSV folder whose subjects differ in size as MMLU's do: 90, 30 and 8 questions."""
    for subject, size in (("big", 90), ("mid", 30), ("small", 8)):
        _csv(tmp_path / "uneven" / "test" / f"{subject}_test.csv",
             [[f"{subject} question {i}?", "a", "b", "c", "d", LETTERS[i % 4]] for i in range(size)])
    return tmp_path / "uneven"


def test_pooled_subsample_follows_subject_sizes(uneven_mmlu):
    """n samples from all subjects pooled: a big subject takes most of the sample (the issue's complaint)."""
    counts = collections.Counter(q.subject for q in load_questions("files", path=uneven_mmlu, n=24, seed=0))
    assert counts["big"] > counts["mid"] > counts["small"]


def test_per_subject_takes_the_same_number_from_every_subject(uneven_mmlu):
    sample = load_questions("files", path=uneven_mmlu, per_subject=8, seed=0)
    assert collections.Counter(q.subject for q in sample) == {"big": 8, "mid": 8, "small": 8}
    everything = load_mmlu_dir(uneven_mmlu)
    assert [q for q in everything if q in sample] == sample  # the source's order, no duplicates
    assert sample == load_questions("files", path=uneven_mmlu, per_subject=8, seed=0)  # deterministic
    other = load_questions("files", path=uneven_mmlu, per_subject=8, seed=1)
    assert other != sample and [q for q in other if q.subject == "small"] == [q for q in sample if q.subject == "small"]
    # a subject's sample is its own: the same whichever other subjects are loaded with it
    alone = load_questions("files", path=uneven_mmlu, subjects=["mid"], per_subject=8, seed=0)
    assert alone == [q for q in sample if q.subject == "mid"]


def test_per_subject_sample_is_the_same_in_a_new_process(uneven_mmlu):
    code = ("from introspect.sources.questions import load_questions\n"
            f"print([q.question_id for q in load_questions('files', path={str(uneven_mmlu)!r}, per_subject=5)])\n")
    env = {**os.environ, "PYTHONHASHSEED": "123"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str([q.question_id for q in load_questions("files", path=uneven_mmlu,
                                                                            per_subject=5)])


def test_per_subject_errors(tmp_path, uneven_mmlu):
    message = _message(lambda: load_questions("files", path=uneven_mmlu, per_subject=31))
    assert "per_subject=31" in message and "small (8)" in message and "mid (30)" in message
    assert "big (" not in message and "at most 8" in message
    assert "both set" in _message(lambda: load_questions("files", path=uneven_mmlu, n=10, per_subject=2))
    assert "use n instead" in _message(lambda: load_questions("builtin", per_subject=2))
    assert "integer >= 1" in _message(lambda: load_questions("files", path=uneven_mmlu, per_subject=0))
    path = _write(tmp_path / "hf.json", HF_SHAPE + FLAT)  # subjects math (2), hf (1, the file's name), nature (1)
    assert collections.Counter(q.subject for q in load_questions("files", path=path, per_subject=1)) == {
        "math": 1, "hf": 1, "nature": 1}


def test_per_subject_on_the_hf_backend(monkeypatch):
    import introspect.sources.questions as module

    records = [{"question": f"Q{i}?", "subject": "law" if i < 40 else "ethics", "choices": ["a", "b", "c", "d"],
                "answer": i % 4} for i in range(50)]
    monkeypatch.setattr(module, "load_mmlu_hf", lambda dataset, subjects, split: module.parse_records(
        records, f"{dataset} [{split}]", "all"))
    sample = load_questions("hf", per_subject=10, seed=0)
    assert collections.Counter(q.subject for q in sample) == {"law": 10, "ethics": 10}
    assert "ethics (10)" in _message(lambda: load_questions("hf", per_subject=11))


def test_frame_round_trip(tmp_path):
    questions = builtin_questions(30) + load_question_file(_write(tmp_path / "f.json", FLAT))
    frame = questions_frame(questions)
    assert frame.columns == ["question_id", "subject", "question", "A", "B", "C", "D", "answer"]
    assert all(dtype == pl.String for dtype in frame.dtypes)
    frame.write_parquet(tmp_path / "q.parquet")
    assert questions_from_frame(pl.read_parquet(tmp_path / "q.parquet")) == questions
    assert questions_frame([]).columns == frame.columns
    assert "missing column(s) answer" in _message(questions_from_frame, frame.drop("answer"))


def test_hf_loader_offline_message(tmp_path):
    code = ("from introspect.sources.questions import load_mmlu_hf, QuestionsError\n"
            "try:\n"
            "    load_mmlu_hf('no-such-owner/no-such-mmlu', ['anatomy'])\n"
            "except QuestionsError as exc:\n"
            "    print('ERROR', exc)\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"),
           "HF_DATASETS_CACHE": str(tmp_path / "datasets")}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.startswith("ERROR")]
    assert len(lines) == 1
    assert "'no-such-owner/no-such-mmlu'" in lines[0] and "'anatomy'" in lines[0]
    assert "hub is unreachable" in lines[0] and "'files' backend" in lines[0]


# --------------------------------------------------------------------------------------------------
# the real MMLU test split (shared/realdata, when present)


@pytest.mark.skipif(not MMLU.is_dir(), reason=f"{MMLU} is absent")
def test_real_mmlu_subjects():
    subjects = ["anatomy", "astronomy", "high_school_geography"]
    questions = load_mmlu_dir(MMLU.parent, subjects, "test")
    counts = collections.Counter(q.subject for q in questions)
    assert list(counts) == subjects
    for subject in subjects:
        with (MMLU / f"{subject}_test.csv").open(newline="", encoding="utf-8") as handle:
            assert counts[subject] == sum(1 for _ in csv.reader(handle))
    assert all(q.question and len(q.options) == 4 and q.answer in LETTERS for q in questions)
    assert questions[0].question_id == "anatomy/0"
    assert questions[0].question.startswith("A lesion causing compression of the facial nerve")
    assert questions[0].answer == "A"
    assert len(load_questions("files", path=MMLU.parent, n=100, seed=0)) == 100


@pytest.mark.skipif(not MMLU.is_dir(), reason=f"{MMLU} is absent")
def test_real_mmlu_per_subject():
    sample = load_questions("files", path=MMLU.parent, per_subject=5, seed=0)
    counts = collections.Counter(q.subject for q in sample)
    assert len(counts) == 57 and set(counts.values()) == {5}
    sizes = collections.Counter(q.subject for q in load_mmlu_dir(MMLU.parent))
    smallest = min(sizes.values())
    message = _message(lambda: load_questions("files", path=MMLU.parent, per_subject=smallest + 1))
    assert f"at most {smallest}" in message
