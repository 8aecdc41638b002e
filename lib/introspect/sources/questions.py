"""Four-option multiple-choice questions for the hint-ablation task.

Paper section 5.2 and appendix E.3: the target answers a multiple-choice question c followed by a hint
("Hint: B"), and the explainer predicts whether removing the hint changes the target's answer. The paper
draws c from MMLU; the questions come from

- the project's builtin generator (:func:`builtin_questions`): easy questions (facts of the builtin fact
  table, small-number arithmetic, unit conversions, calendar) that targets as small as SmolLM2-135M can
  answer, so that the offline pipeline needs no download;
- MMLU's CSV release (:func:`load_mmlu_dir`, :func:`load_mmlu_csv`: ``{root}/{split}/{subject}_{split}.csv``,
  headerless rows question, A, B, C, D, answer);
- a JSON, JSONL or Parquet file (:func:`load_question_file`) with fields question, A, B, C, D, answer, or
  in the Hugging Face ``cais/mmlu`` shape (question, subject, choices, answer index);
- a Hugging Face dataset in the ``cais/mmlu`` shape (:func:`load_mmlu_hf`).

:func:`load_questions` picks one of these by backend name, as the workflow's config does.
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
import json
import logging
import random
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import polars as pl

from introspect.sources.facts import Fact, FactsError, builtin_facts, first_word
from introspect.sources.records import read_jsonl, read_text

log = logging.getLogger(__name__)


LETTERS = ("A", "B", "C", "D")


BACKENDS = ("builtin", "files", "hf")


FRAME_SCHEMA = {"question_id": pl.String, "subject": pl.String, "question": pl.String, "A": pl.String,
                "B": pl.String, "C": pl.String, "D": pl.String, "answer": pl.String}


CSV_COLUMNS = "question, A, B, C, D, answer"


DEFAULT_BUILTIN = 1200


DEFAULT_HF_DATASET = "cais/mmlu"


class QuestionsError(ValueError):
    """Questions cannot be read or made; the message says where (file, row or record, field) and what to do."""


@dataclasses.dataclass(frozen=True)
class Question:
    """One four-option question; `answer` is the letter (A-D) of the correct option."""

    question_id: str
    subject: str
    question: str
    options: tuple[str, str, str, str]
    answer: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "options", tuple(self.options))
        if len(self.options) != 4:
            raise QuestionsError(f"question {self.question_id!r}: {len(self.options)} options; expected 4 (A-D)")
        if self.answer not in LETTERS:
            raise QuestionsError(f"question {self.question_id!r}: answer {self.answer!r} is not one of A, B, C, D")

    @property
    def choices(self) -> str:
        """The options block as MMLU prompts show it: 'A. Paris' and so on, one per line."""
        return "\n".join(f"{letter}. {option}" for letter, option in zip(LETTERS, self.options))

    @property
    def prompt(self) -> str:
        """The question c of the paper: the question, then the options block."""
        return f"{self.question}\n{self.choices}"

    @property
    def correct(self) -> str:
        """The text of the correct option."""
        return self.options[LETTERS.index(self.answer)]


# A question per relation of the builtin fact table; '{}' is the subject. Other relations use FALLBACK.
FACT_QUESTIONS = {
    "capital_of": "{} is the capital of which country?",
    "country_capital": "What is the capital city of {}?",
    "city_country": "{} is a city in which country?",
    "country_language": "What language do most people in {} speak?",
    "country_currency": "What is the currency of {}?",
    "landmark_city": "{} is located in which city?",
    "landmark_country": "{} is located in which country?",
    "company_country": "{} is a company from which country?",
    "animal_class": "{} are which type of animal?",
    "thing_color": "{} are usually which color?",
    "athlete_sport": "{} is best known for playing which sport?",
    "person_occupation": "What is {} best known as?",
}


FALLBACK = "Which of these completes: '{} ___'?"


# (plural of the unit asked for, plural of the unit given, factor)
CONVERSIONS = (
    ("centimetres", "metres", 100), ("millimetres", "centimetres", 10), ("metres", "kilometres", 1000),
    ("grams", "kilograms", 1000), ("millilitres", "litres", 1000), ("minutes", "hours", 60),
    ("seconds", "minutes", 60), ("hours", "days", 24), ("days", "weeks", 7), ("months", "years", 12),
    ("inches", "feet", 12), ("eggs", "dozen", 12),
)


MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December")


MONTH_DAYS = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


SEASONS = ("spring", "summer", "autumn", "winter")


ORDINALS = ("1st", "2nd", "3rd", "4th", "5th", "6th", "7th", "8th", "9th", "10th", "11th", "12th")


# (question, answer, three wrong answers)
CALENDAR_FACTS = (
    ("How many days are in a week?", "7", ("5", "6", "10")),
    ("How many months are in a year?", "12", ("10", "11", "14")),
    ("How many days are in a year that is not a leap year?", "365", ("300", "360", "366")),
    ("How many days are in a leap year?", "366", ("360", "364", "365")),
    ("How many hours are in a day?", "24", ("12", "20", "60")),
    ("How many minutes are in an hour?", "60", ("24", "30", "100")),
    ("How many seconds are in a minute?", "60", ("10", "24", "100")),
    ("How many weeks are in a year?", "52", ("12", "48", "365")),
    ("How many years are in a decade?", "10", ("5", "12", "100")),
    ("How many years are in a century?", "100", ("10", "50", "1000")),
)


@dataclasses.dataclass(frozen=True)
class _Draft:
    """A builtin question before its correct option gets a letter."""

    question_id: str
    subject: str
    question: str
    correct: str
    wrong: tuple[str, str, str]


def builtin_questions(n: int = DEFAULT_BUILTIN, seed: int = 0) -> list[Question]:
    """`n` easy questions, written for this project and the same for the same (n, seed).

    The families (facts, arithmetic, units, calendar) take turns, and the fact relations take turns within
    facts, so any `n` mixes them; a family that runs out leaves its turns to the others. The correct
    option's letter is balanced over A-D (counts differ by at most one). `subject` names the family
    ('facts/capital_of', 'arithmetic', 'units', 'calendar').
    """
    families = _builtin_families(seed)
    available = sum(len(drafts) for drafts in families)
    if not 0 <= n <= available:
        raise QuestionsError(f"builtin questions: n={n} asked for, but the builtin generator makes at most "
                             f"{available}; ask for at most {available}, or use the 'files' or 'hf' backend "
                             "(MMLU) for more")
    drafts = list(itertools.islice(_round_robin(families), n))
    rng = random.Random(f"{seed}:answers")
    letters = [LETTERS[i % 4] for i in range(n)]
    rng.shuffle(letters)
    questions = []
    for draft, letter in zip(drafts, letters):
        options = list(draft.wrong)
        rng.shuffle(options)
        options.insert(LETTERS.index(letter), draft.correct)
        questions.append(Question(draft.question_id, draft.subject, draft.question, tuple(options), letter))
    return questions


def builtin_capacity() -> int:
    """How many questions :func:`builtin_questions` can make (the largest `n`)."""
    return sum(len(drafts) for drafts in _builtin_families(0))


def _builtin_families(seed: int) -> list[list[_Draft]]:
    """Each family's questions in a seeded order: facts (relations interleaved), arithmetic, units, calendar."""
    relations = [_shuffled(drafts, seed, subject) for subject, drafts in _fact_drafts(seed).items()]
    facts = list(_round_robin(relations))
    return [facts] + [_shuffled(make(random.Random(f"{seed}:{name}")), seed, name)
                      for name, make in (("arithmetic", _arithmetic_drafts), ("units", _unit_drafts),
                                         ("calendar", _calendar_drafts))]


def _shuffled(drafts: list[_Draft], seed: int, name: str) -> list[_Draft]:
    drafts = list(drafts)
    random.Random(f"{seed}:{name}:order").shuffle(drafts)
    return drafts


def _round_robin(streams: Iterable[Iterable[_Draft]]) -> Iterator[_Draft]:
    """One item of each stream in turn; exhausted streams drop out."""
    iterators = [iter(stream) for stream in streams]
    while iterators:
        for iterator in list(iterators):
            item = next(iterator, None)
            if item is None:
                iterators.remove(iterator)
            else:
                yield item


def _fact_drafts(seed: int) -> dict[str, list[_Draft]]:
    """A question per builtin fact; the wrong options are other objects of its relation, no first word shared."""
    try:
        facts = builtin_facts()
    except FactsError as exc:
        raise QuestionsError(f"builtin questions need the builtin fact table: {exc}") from exc
    by_relation: dict[str, list[Fact]] = {}
    for fact in facts:
        by_relation.setdefault(fact.relation_id, []).append(fact)
    drafts: dict[str, list[_Draft]] = {}
    for relation_id, relation_facts in by_relation.items():
        objects_by_key: dict[str, str] = {}  # one object per first word, in file order
        for fact in relation_facts:
            objects_by_key.setdefault(first_word(fact.object), fact.object)
        if len(objects_by_key) < 4:
            log.warning("relation %s skipped: fewer than 4 objects with distinct first words", relation_id)
            continue
        subject = f"facts/{relation_id}"
        rng = random.Random(f"{seed}:{subject}")
        template = FACT_QUESTIONS.get(relation_id)
        drafts[subject] = []
        for index, fact in enumerate(relation_facts):
            others = [key for key in objects_by_key if key != first_word(fact.object)]
            wrong = tuple(objects_by_key[key] for key in rng.sample(others, 3))
            text = template.format(_mid_sentence(fact.subject, template)) if template \
                else FALLBACK.format(fact.prompt)
            drafts[subject].append(_Draft(f"{subject}/{index}", subject, text, fact.object, wrong))
    return drafts


def _mid_sentence(subject: str, template: str) -> str:
    """'The Netherlands' reads 'the Netherlands' inside a sentence."""
    if not template.startswith("{}") and subject.startswith("The "):
        return "the " + subject[4:]
    return subject


def _near(answer: int, candidates: Iterable[int], rng: random.Random) -> tuple[str, str, str]:
    """Three distinct positive wrong answers drawn from `candidates`."""
    pool = sorted({c for c in candidates if c > 0 and c != answer})
    return tuple(str(c) for c in rng.sample(pool, 3))  # type: ignore[return-value]


def _arithmetic_drafts(rng: random.Random) -> list[_Draft]:
    """Sums and differences of numbers up to 20, products up to 10 x 10; wrong answers lie close."""
    items = [(f"What is {a} + {b}?", a + b, ()) for a in range(1, 21) for b in range(1, 21)]
    items += [(f"What is {a} - {b}?", a - b, ()) for a in range(2, 21) for b in range(1, a)]
    items += [(f"What is {a} × {b}?", a * b, (a * (b - 1), a * (b + 1), (a - 1) * b, (a + 1) * b))
              for a in range(2, 11) for b in range(2, 11)]
    return [_Draft(f"arithmetic/{i}", "arithmetic", text, str(answer),
                   _near(answer, [answer + d for d in (-3, -2, -1, 1, 2, 3)] + list(extra), rng))
            for i, (text, answer, extra) in enumerate(items)]


def _unit_drafts(rng: random.Random) -> list[_Draft]:
    """'How many centimetres are in 3 metres?' for 2 to 11 of each unit; wrong answers miss by a unit or x10."""
    drafts = []
    for small, large, factor in CONVERSIONS:
        for k in range(2, 12):
            answer = k * factor
            candidates = [(k - 1) * factor, (k + 1) * factor, answer * 10, k + factor]
            candidates += [answer // 10] if answer % 10 == 0 else [answer + factor // 2]
            drafts.append(_Draft(f"units/{len(drafts)}", "units", f"How many {small} are in {k} {large}?",
                                 str(answer), _near(answer, candidates, rng)))
    return drafts


def _calendar_drafts(rng: random.Random) -> list[_Draft]:
    """Months, days of the week, seasons and calendar numbers."""
    items: list[tuple[str, str, Sequence[str]]] = []

    def cycle(names: Sequence[str], what: str) -> None:
        for i, name in enumerate(names):
            items.append((f"Which {what} comes after {name}?", names[(i + 1) % len(names)], names))
            items.append((f"Which {what} comes before {name}?", names[i - 1], names))

    cycle(MONTHS, "month")
    cycle(DAYS, "day of the week")
    cycle(SEASONS, "season")
    items += [(f"Which month is the {ordinal} month of the year?", month, MONTHS)
              for ordinal, month in zip(ORDINALS, MONTHS)]
    lengths = ("28", "29", "30", "31")
    items += [(f"How many days are in {month}{' in a year that is not a leap year' if days == 28 else ''}?",
               str(days), lengths) for month, days in zip(MONTHS, MONTH_DAYS)]
    drafts = [_Draft(f"calendar/{i}", "calendar", text, answer,
                     tuple(rng.sample([c for c in choices if c != answer], 3)))  # type: ignore[arg-type]
              for i, (text, answer, choices) in enumerate(items)]
    drafts += [_Draft(f"calendar/{len(items) + i}", "calendar", text, answer, wrong)
               for i, (text, answer, wrong) in enumerate(CALENDAR_FACTS)]
    return drafts


def load_mmlu_csv(path: str | Path, subject: str | None = None) -> list[Question]:
    """Questions of one headerless MMLU CSV file (question, A, B, C, D, answer).

    `subject` defaults to the file name without '_{split}.csv' ('anatomy_test.csv' -> 'anatomy');
    question ids are '{subject}/{i}' with i the 0-based row; errors name the 1-based row.
    """
    path = Path(path)
    if not path.is_file():
        raise QuestionsError(f"{path}: no such file; expected a headerless MMLU CSV file ({CSV_COLUMNS})")
    if subject is None:
        stem = path.stem
        subject = stem.rsplit("_", 1)[0] if stem.rsplit("_", 1)[-1] in ("test", "dev", "val", "train") else stem
    questions = []
    row = 0
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            for row, fields in enumerate(csv.reader(handle, strict=True), start=1):
                if not fields or fields == [""]:
                    continue  # a blank line
                context = f"row {row}"
                if len(fields) != 6:
                    problem = "missing column(s)" if len(fields) < 6 else "extra column(s)"
                    raise QuestionsError(f"{path} {context}: {len(fields)} columns ({problem}); expected 6 "
                                         f"({CSV_COLUMNS}); fields with commas, quotes or line breaks must be "
                                         "quoted")
                record = dict(zip(("question", *LETTERS, "answer"), fields))
                questions.append(_question(record, str(path), context, subject, f"{subject}/{row - 1}"))
    except UnicodeDecodeError as exc:
        raise QuestionsError(f"{path} row {row + 1}: not UTF-8 text ({exc.reason}); save the file as UTF-8"
                             ) from None
    except csv.Error as exc:
        raise QuestionsError(f"{path} row {row + 1}: not valid CSV ({exc}); expected {CSV_COLUMNS}") from exc
    if not questions:
        raise QuestionsError(f"{path}: the file is empty; expected headerless MMLU rows ({CSV_COLUMNS}) "
                             "from row 1 on")
    return questions


def load_mmlu_dir(root: str | Path, subjects: Sequence[str] | None = None, split: str = "test") -> list[Question]:
    """Questions of MMLU's CSV layout ``{root}/{split}/{subject}_{split}.csv``, subject by subject.

    `subjects` None takes every subject of the split, sorted by name. `root` may also be the split folder.
    """
    root = Path(root)
    folder = root / split
    if not folder.is_dir():
        if root.is_dir() and any(root.glob(f"*_{split}.csv")):
            folder = root  # the split folder itself
        else:
            splits = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
            raise QuestionsError(f"{folder}: no such folder; expected MMLU's layout "
                                 f"{root}/{split}/{{subject}}_{split}.csv (folders under {root}: "
                                 f"{splits or 'none'}); download MMLU's CSV release (data.tar) and unpack it there")
    available = sorted(p.name[: -len(f"_{split}.csv")] for p in folder.glob(f"*_{split}.csv"))
    if not available:
        raise QuestionsError(f"{folder}: no '*_{split}.csv' files; expected MMLU's {{subject}}_{split}.csv files")
    chosen = available if subjects is None else list(subjects)
    questions = []
    for subject in chosen:
        path = folder / f"{subject}_{split}.csv"
        if not path.is_file():
            raise QuestionsError(f"{path}: no such file: subject {subject!r} is not in {folder}; the "
                                 f"available subjects are {', '.join(available)}")
        questions += load_mmlu_csv(path, subject)
    return questions


def load_question_file(path: str | Path) -> list[Question]:
    """Questions of a JSON (list of records), JSONL or Parquet file (or an MMLU .csv file).

    A record has question, A, B, C, D and answer (a letter), or the ``cais/mmlu`` shape: question, choices
    (4 strings) and answer (0-3); subject and question_id are optional (default: the file's name and
    '{subject}/{i}'). Errors name the 0-based record (JSON Lines syntax errors: the 1-based line).
    """
    path = Path(path)
    where = str(path)
    if not path.is_file():
        raise QuestionsError(f"{where}: no such file; expected a question file (.csv, .json, .jsonl or .parquet)")
    if path.suffix.lower() == ".csv":
        return load_mmlu_csv(path)
    if path.suffix.lower() == ".parquet":
        try:
            import pyarrow.parquet as pq

            records: list[Any] = pq.read_table(path).to_pylist()
        except Exception as exc:  # pyarrow raises several types for a damaged file
            raise QuestionsError(f"{where}: cannot read as Parquet: {exc}") from exc
    else:
        text = read_text(path, QuestionsError)
        if not text.strip():
            raise QuestionsError(f"{where}: the file is empty; expected a list of question records")
        if path.suffix.lower() == ".jsonl":
            records = read_jsonl(text, where, QuestionsError, "question record")
        else:
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                raise QuestionsError(f"{where}: not valid JSON ({exc}); expected a list of question records "
                                     "(or JSON Lines in a .jsonl file)") from exc
            if not isinstance(data, list):
                raise QuestionsError(f"{where}: expected a list of question records, got {type(data).__name__}")
            records = data
    if not records:
        raise QuestionsError(f"{where}: the file has no records; expected a list of question records")
    return parse_records(records, where, default_subject=path.stem)


def load_mmlu_hf(dataset: str = DEFAULT_HF_DATASET, subjects: Sequence[str] | None = None,
                 split: str = "test") -> list[Question]:
    """Questions of a Hugging Face dataset in the ``cais/mmlu`` shape, one config per subject ('all' for None)."""
    questions = []
    for config in subjects or ["all"]:
        where = f"{dataset} [{config}, {split}]"
        try:
            import datasets

            records = list(datasets.load_dataset(dataset, config, split=split))
        except Exception as exc:  # hub, network, offline-mode and missing-config errors all end here
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise QuestionsError(
                f"cannot load Hugging Face dataset {dataset!r} (config {config!r}, split {split!r}): "
                f"{type(exc).__name__}: {reason[:300]}. If the hub is unreachable (no network, or offline "
                "mode), use the 'files' backend with a local MMLU CSV folder ({root}/{split}/{subject}_"
                "{split}.csv, MMLU's data.tar) or a .json/.jsonl/.parquet question file"
            ) from exc
        if not records:
            raise QuestionsError(f"{where}: the dataset has no records")
        questions += parse_records(records, where, default_subject=config)
    return questions


def parse_records(records: Sequence[Any], where: str, default_subject: str) -> list[Question]:
    """Questions of flat or ``cais/mmlu``-shaped records; ids default to '{subject}/{i}' counted per subject."""
    counts: dict[str, int] = {}
    questions = []
    for index, record in enumerate(records):
        context = f"record {index}"
        if not isinstance(record, dict):
            raise QuestionsError(f"{where} {context}: expected an object with question, A-D (or choices) and "
                                 f"answer, got {type(record).__name__}")
        subject = record.get("subject") or default_subject
        if not isinstance(subject, str):
            raise QuestionsError(f"{where} {context}: 'subject' is {type(subject).__name__}; expected a string")
        number = counts.get(subject, 0)
        counts[subject] = number + 1
        questions.append(_question(record, where, context, subject, f"{subject}/{number}"))
    return questions


def _question(record: Mapping[str, Any], where: str, context: str, subject: str, default_id: str) -> Question:
    """One question from a record with question, A-D or choices, answer and an optional question_id."""
    record = {key: value for key, value in record.items() if value is not None}  # Parquet fills gaps with None
    question = _text(record, "question", where, context)
    if not question:
        raise QuestionsError(f"{where} {context}: 'question' is empty; expected the question text")
    if "choices" in record and not all(letter in record for letter in LETTERS):
        choices = record["choices"]
        if not isinstance(choices, (list, tuple)) or len(choices) != 4:
            got = f"{len(choices)} options" if isinstance(choices, (list, tuple)) else type(choices).__name__
            raise QuestionsError(f"{where} {context}: 'choices' is {got}; expected a list of 4 options (A-D)")
        options = tuple(_text({f"choices[{i}]": c}, f"choices[{i}]", where, context) for i, c in enumerate(choices))
    else:
        options = tuple(_text(record, letter, where, context) for letter in LETTERS)
    answer = record.get("answer")
    if isinstance(answer, int) and not isinstance(answer, bool) and 0 <= answer <= 3:
        letter = LETTERS[answer]
    elif isinstance(answer, str) and answer.strip().upper() in LETTERS:
        letter = answer.strip().upper()
    elif answer is None:
        raise QuestionsError(f"{where} {context}: 'answer' is missing; expected a letter A-D or an index 0-3")
    else:
        raise QuestionsError(f"{where} {context}: 'answer' is {answer!r}; expected a letter A-D or an index 0-3")
    question_id = record.get("question_id", default_id)
    return Question(str(question_id), subject, question, options, letter)  # type: ignore[arg-type]


def _text(record: Mapping[str, Any], field: str, where: str, context: str) -> str:
    """A field as stripped text; numbers are accepted and written out."""
    if field not in record:
        raise QuestionsError(f"{where} {context}: '{field}' is missing; expected fields question, A, B, C, D "
                             "and answer (or question, choices and answer)")
    value = record[field]
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise QuestionsError(f"{where} {context}: '{field}' is {type(value).__name__}; expected a string")
    return str(value).strip()


def load_questions(backend: str, *, path: str | Path | None = None, dataset: str | None = None,
                   subjects: Sequence[str] | None = None, split: str = "test", n: int | None = None,
                   per_subject: int | None = None, seed: int = 0) -> list[Question]:
    """Questions from a backend: 'builtin', 'files' (an MMLU CSV folder or a question file) or 'hf'.

    With `n`, exactly `n` questions (more than the source has is an error, not a cap): the builtin generator
    makes `n`; other backends keep a seeded subsample of `n`, in their original order, drawn from all subjects pooled (so a subject's
    share follows its size). With `per_subject` ('files' and 'hf' only; not together with `n`), exactly
    that many from every subject instead (:func:`sample_per_subject`); a subject with fewer is an error.
    `path` is read by 'files', `dataset` by 'hf', `subjects` and `split` by both; the builtin generator has
    its own families and takes none of them.
    """
    if n is not None and n < 0:
        raise QuestionsError(f"n must be >= 0 (or None for all questions), got {n}")
    if per_subject is not None:
        if isinstance(per_subject, bool) or not isinstance(per_subject, int) or per_subject < 1:
            raise QuestionsError(f"per_subject must be an integer >= 1 (or None), got {per_subject!r}")
        if n is not None:
            raise QuestionsError(f"n={n} and per_subject={per_subject} are both set; set one of them and leave "
                                 "the other null (n: a pooled sample over all subjects; per_subject: that many "
                                 "questions from each subject)")
        if backend == "builtin":
            raise QuestionsError("per_subject applies to MMLU subjects (the 'files' and 'hf' backends); the "
                                 "builtin generator mixes its own families evenly: use n instead")
    if backend == "builtin":
        capacity = builtin_capacity()
        wanted = DEFAULT_BUILTIN if n is None else n
        if wanted > capacity:
            raise QuestionsError(f"hints.questions.n: {wanted} questions asked, but the builtin generator makes "
                                 f"{capacity}; lower n or use backend files/hf (MMLU)")
        return builtin_questions(wanted, seed)
    if backend == "files":
        if path is None:
            raise QuestionsError("the 'files' backend needs a path: an MMLU CSV folder ({root}/{split}/"
                                 "{subject}_{split}.csv) or a .csv/.json/.jsonl/.parquet question file")
        path = Path(path)
        if path.is_dir():
            questions = load_mmlu_dir(path, subjects, split)
        else:
            questions = _of_subjects(load_question_file(path), subjects, str(path))
    elif backend == "hf":
        questions = load_mmlu_hf(dataset or DEFAULT_HF_DATASET, subjects, split)
    else:
        raise QuestionsError(f"unknown question backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    if per_subject is not None:
        return sample_per_subject(questions, per_subject, seed, str(path) if backend == "files" else
                                  f"{dataset or DEFAULT_HF_DATASET} [{split}]")
    if n is not None and n > len(questions):
        source = str(path) if backend == "files" else f"{dataset or DEFAULT_HF_DATASET} [{split}]"
        raise QuestionsError(f"hints.questions.n: {n} questions asked, but {source} has {len(questions)}"
                             f"{' in the subjects chosen' if subjects else ''}; lower n (or null for all of them)")
    if n is None or n == len(questions):
        return questions
    keep = sorted(random.Random(f"{seed}:subsample").sample(range(len(questions)), n))
    return [questions[i] for i in keep]


def sample_per_subject(questions: Sequence[Question], k: int, seed: int = 0,
                       where: str = "questions") -> list[Question]:
    """`k` questions of every subject, in their original order: a seeded sample per subject.

    Each subject's sample depends only on (seed, subject, that subject's questions), so adding or removing
    another subject leaves it unchanged. A subject with fewer than `k` questions is an error that names
    every such subject and its count (no silent cap: each subject would otherwise weigh differently)."""
    by_subject: dict[str, list[int]] = {}
    for i, question in enumerate(questions):
        by_subject.setdefault(question.subject, []).append(i)
    short = {subject: len(indices) for subject, indices in by_subject.items() if len(indices) < k}
    if short:
        listed = ", ".join(f"{subject} ({count})" for subject, count in sorted(short.items()))
        raise QuestionsError(f"{where}: per_subject={k}, but {len(short)} subject(s) have fewer questions: "
                             f"{listed}; lower per_subject to at most {min(short.values())}, or leave those "
                             "subjects out (subjects: [...])")
    keep: list[int] = []
    for subject, indices in by_subject.items():
        keep += random.Random(f"{seed}:per_subject:{subject}").sample(indices, k)
    return [questions[i] for i in sorted(keep)]


def _of_subjects(questions: list[Question], subjects: Sequence[str] | None, where: str) -> list[Question]:
    """The questions of `subjects` (None: all); a subject the file lacks is an error."""
    if subjects is None:
        return questions
    present = sorted({q.subject for q in questions})
    missing = [s for s in subjects if s not in present]
    if missing:
        raise QuestionsError(f"{where}: no questions of subject(s) {', '.join(missing)}; the file has "
                             f"{', '.join(present)}")
    return [q for q in questions if q.subject in set(subjects)]


def questions_frame(questions: Sequence[Question]) -> pl.DataFrame:
    """A table with one row per question: question_id, subject, question, A, B, C, D, answer."""
    rows = [{"question_id": q.question_id, "subject": q.subject, "question": q.question,
             **dict(zip(LETTERS, q.options)), "answer": q.answer} for q in questions]
    return pl.DataFrame(rows, schema=FRAME_SCHEMA)


def questions_from_frame(df: pl.DataFrame, where: str = "question table") -> list[Question]:
    """The questions of a :func:`questions_frame` table."""
    missing = [name for name in FRAME_SCHEMA if name not in df.columns]
    if missing:
        raise QuestionsError(f"{where}: missing column(s) {', '.join(missing)}; expected "
                             f"{', '.join(FRAME_SCHEMA)}")
    return [_question(row, where, f"row {i}", str(row["subject"] or ""), str(row["question_id"] or i))
            for i, row in enumerate(df.select(list(FRAME_SCHEMA)).iter_rows(named=True))]
