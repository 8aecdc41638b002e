"""Facts and counterfactual pairs: the builtin table, CounterFact loaders, pairing and prompt formatting."""

from __future__ import annotations

import collections
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

from introspect.sources.facts import (
    PAPER_PROMPT,
    Fact,
    FactPair,
    FactsError,
    builtin_facts,
    format_prompt,
    load_counterfact_file,
    make_pairs,
)

REALDATA = REPO.parent / "shared" / "realdata"
COUNTERFACT = REALDATA / "counterfact" / "counterfact_500.json"
KNOWN = REALDATA / "counterfact" / "known_1000.json"


@pytest.fixture(scope="module")
def facts() -> list[Fact]:
    return builtin_facts()


def _by_relation(facts: list[Fact]) -> dict[str, list[Fact]]:
    groups: dict[str, list[Fact]] = collections.defaultdict(list)
    for fact in facts:
        groups[fact.relation_id].append(fact)
    return groups


# --------------------------------------------------------------------------------------------------
# builtin table


def test_builtin_table_size(facts):
    groups = _by_relation(facts)
    assert len(groups) >= 8
    assert len(facts) >= 300
    for relation_id, group in groups.items():
        assert len({f.object for f in group}) >= 8, relation_id


def test_builtin_table_shape(facts):
    for relation_id, group in _by_relation(facts).items():
        subjects = [f.subject for f in group]
        assert len(subjects) == len(set(subjects)), f"{relation_id}: duplicate subjects"
        templates = {f.template for f in group}
        assert len(templates) == 1, relation_id
        template = templates.pop()
        assert template.count("{}") == 1 and template.count("{") == 1, template
        assert template.startswith("{}"), f"{relation_id}: the subject comes first"
        for fact in group:
            assert fact.subject == fact.subject.strip() and fact.object == fact.object.strip()
            assert fact.subject and fact.object
            assert fact.object.lower() not in fact.subject.lower(), fact
            assert fact.prompt == template.replace("{}", fact.subject)


def test_builtin_facts_deterministic(facts):
    assert builtin_facts() == facts
    assert facts[0] == Fact("Paris", "capital_of", "{} is the capital of", "France")
    assert facts[0].prompt == "Paris is the capital of"


def test_builtin_facts_shipped_as_package_data():
    import introspect

    assert (Path(introspect.__file__).parent / "data" / "facts.json").is_file()
    table = json.loads((Path(introspect.__file__).parent / "data" / "facts.json").read_text("utf-8"))
    assert set(table) >= {"relations", "facts"}
    assert all({"template", "description"} <= set(r) for r in table["relations"].values())


# --------------------------------------------------------------------------------------------------
# pairs


def _first_word(text: str) -> str:
    return text.split()[0].lower()


def test_pairs_share_relation_and_options(facts):
    pairs = make_pairs(facts, 200, seed=0)
    assert len(pairs) == 200
    for pair in pairs:
        assert isinstance(pair, FactPair)
        x, y = pair.original, pair.counterfactual
        assert x.relation_id == y.relation_id and x.template == y.template
        assert x.subject != y.subject and x.object != y.object
        assert len(pair.options) == 5 and len(set(pair.options)) == 5
        assert x.object in pair.options and y.object in pair.options
        assert len({_first_word(o) for o in pair.options}) == 5  # no two options share a first word
        relation_objects = {f.object for f in facts if f.relation_id == x.relation_id}
        assert set(pair.options) <= relation_objects
    keys = [(p.original, p.counterfactual) for p in pairs]
    assert len(keys) == len(set(keys))


def test_pairs_deterministic_and_seeded(facts):
    assert make_pairs(facts, 50, seed=3) == make_pairs(facts, 50, seed=3)
    assert make_pairs(facts, 50, seed=3) != make_pairs(facts, 50, seed=4)
    # a shorter request is a prefix of a longer one
    assert make_pairs(facts, 80, seed=3)[:50] == make_pairs(facts, 50, seed=3)


def test_pairs_deterministic_across_processes(facts):
    code = ("from introspect.sources.facts import builtin_facts, make_pairs;"
            "print([(p.original.subject, p.counterfactual.subject, p.options) "
            "for p in make_pairs(builtin_facts(), 30, seed=7)])")
    outputs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                              env={**os.environ, "PYTHONHASHSEED": str(h)}).stdout for h in (1, 2)}
    assert len(outputs) == 1


def test_pairs_balanced_across_relations(facts):
    n_relations = len(_by_relation(facts))
    pairs = make_pairs(facts, 10 * n_relations + 3, seed=1)
    counts = collections.Counter(p.original.relation_id for p in pairs)
    assert len(counts) == n_relations
    assert max(counts.values()) - min(counts.values()) <= 1


def test_pairs_option_order_varies(facts):
    pairs = make_pairs(facts, 100, seed=0)
    positions = {p.options.index(p.original.object) for p in pairs}
    assert positions == set(range(5))


def _fact(subject: str, obj: str, relation: str = "r") -> Fact:
    return Fact(subject, relation, "{} is in", obj)


def test_pairs_skip_small_relations_and_report_shortfall(caplog):
    small = [_fact(f"s{i}", f"o{i}", "small") for i in range(4)]  # 4 distinct objects < 5 options
    big = [_fact(f"t{i}", f"p{i}", "big") for i in range(5)]
    with caplog.at_level(logging.WARNING, logger="introspect.sources.facts"):
        pairs = make_pairs(small + big, 1000, seed=0)
    assert {p.original.relation_id for p in pairs} == {"big"}
    assert len(pairs) == 5 * 4  # every ordered pair of the big relation, once
    assert "small" in caplog.text and "skipped" in caplog.text
    assert "only 20" in caplog.text


def test_pairs_fewer_options(facts):
    pairs = make_pairs(facts, 20, seed=0, n_options=3)
    assert all(len(p.options) == 3 for p in pairs)
    with pytest.raises(ValueError):
        make_pairs(facts, 5, seed=0, n_options=1)


def test_pairs_duplicate_facts_do_not_duplicate_pairs():
    base = [_fact(f"s{i}", f"o{i}") for i in range(6)]
    pairs = make_pairs(base + base, 1000, seed=0)
    assert len(pairs) == 30
    assert len({(p.original, p.counterfactual) for p in pairs}) == 30


def test_pairs_large_relation_sampled():
    many = [_fact(f"s{i}", f"o{i % 40}") for i in range(400)]  # > 50k candidate pairs: sampled
    pairs = make_pairs(many, 500, seed=0)
    assert len(pairs) == 500
    assert len({(p.original, p.counterfactual) for p in pairs}) == 500
    assert pairs == make_pairs(many, 500, seed=0)
    assert all(p.original.object != p.counterfactual.object for p in pairs)


# --------------------------------------------------------------------------------------------------
# prompts


def test_format_prompt_paper_example():
    fact = Fact("Rome", "capital_of", "{} is the capital of", "Italy")
    text = format_prompt(fact, ("France", "Spain", "UK", "Italy", "Egypt"))
    assert text == ("Rome is the capital of\n"
                    "Respond with one of France or Spain or UK or Italy or Egypt or unknown and nothing else.")
    assert format_prompt(fact, ["a", "b"], PAPER_PROMPT) == format_prompt(fact, ("a", "b"))


def test_format_prompt_custom_template():
    fact = Fact("Rome", "capital_of", "{} is the capital of", "Italy")
    template = "Options: {options}.\n{{{subject}}} -> {statement}"
    assert format_prompt(fact, ["Italy", "Spain"], template) == "Options: Italy or Spain.\n{Rome} -> Rome is the capital of"
    with pytest.raises(ValueError, match="unknown fields"):
        format_prompt(fact, ["Italy"], "{prompt} {answer}")
    with pytest.raises(ValueError, match="no {prompt}"):
        format_prompt(fact, ["Italy"], "{options}")


# --------------------------------------------------------------------------------------------------
# CounterFact files


NESTED = [
    {"case_id": 1, "requested_rewrite": {"prompt": "{} is located in", "relation_id": "P30", "subject": "Angola",
                                         "target_true": {"str": " Africa", "id": "Q15"},
                                         "target_new": {"str": "Antarctica", "id": "Q51"}}},
    {"case_id": 2, "requested_rewrite": {"prompt": "The capital of {} is", "relation_id": "P36",
                                         "subject": "France", "target_true": {"str": "Paris"}}},
]
KNOWN_RECORDS = [
    {"known_id": 0, "subject": "Vinson Massif", "attribute": "Antarctica",
     "template": "{} is located in the continent", "prediction": " Antarctica.",
     "prompt": "Vinson Massif is located in the continent of", "relation_id": "P30"},
]
FLAT = [
    {"subject": "Danielle Darrieux", "relation": "The mother tongue of {} is", "target_true": " French",
     "relation_id": "P103", "prompt": "The mother tongue of Danielle Darrieux is"},
    {"subject": "Toko Yasuda", "prompt": "Toko Yasuda plays the", "target_true": " guitar",
     "relation_id": "P1303"},
    {"subject": "Paris", "template": "{} is the capital of", "object": "France", "relation_id": "capital_of"},
]


def _write(path: Path, records) -> Path:
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    elif path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        keys = list(dict.fromkeys(key for record in records for key in record))  # from_pylist reads row 0's keys
        pq.write_table(pa.Table.from_pylist([{key: r.get(key) for key in keys} for r in records]), path)
    else:
        path.write_text(json.dumps(records))
    return path


@pytest.mark.parametrize("suffix", [".json", ".jsonl", ".parquet"])
def test_load_nested_counterfact(tmp_path, suffix):
    facts = load_counterfact_file(_write(tmp_path / f"cf{suffix}", NESTED))
    assert facts == [Fact("Angola", "P30", "{} is located in", "Africa"),
                     Fact("France", "P36", "The capital of {} is", "Paris")]
    assert facts[1].prompt == "The capital of France is"


@pytest.mark.parametrize("suffix", [".json", ".jsonl", ".parquet"])
def test_load_known_facts(tmp_path, suffix):
    facts = load_counterfact_file(_write(tmp_path / f"known{suffix}", KNOWN_RECORDS))
    assert facts == [Fact("Vinson Massif", "P30", "{} is located in the continent", "Antarctica")]


@pytest.mark.parametrize("suffix", [".json", ".jsonl", ".parquet"])
def test_load_flat(tmp_path, suffix):
    facts = load_counterfact_file(_write(tmp_path / f"flat{suffix}", FLAT))
    assert facts == [Fact("Danielle Darrieux", "P103", "The mother tongue of {} is", "French"),
                     Fact("Toko Yasuda", "P1303", "{} plays the", "guitar"),
                     Fact("Paris", "capital_of", "{} is the capital of", "France")]


def test_load_builtin_format_file(tmp_path):
    table = {"relations": {"r": {"template": "{} is in"}}, "facts": [{"subject": "a", "relation_id": "r",
                                                                      "object": "b"}]}
    path = tmp_path / "table.json"
    path.write_text(json.dumps(table))
    assert load_counterfact_file(path) == [Fact("a", "r", "{} is in", "b")]


def test_prompt_with_braces_is_escaped(tmp_path):
    records = [{"subject": "X", "prompt": "{weird} X is in", "target_true": "Y", "relation_id": "r"}]
    (fact,) = load_counterfact_file(_write(tmp_path / "b.json", records))
    assert fact.prompt == "{weird} X is in"


def _error(tmp_path: Path, records, name: str = "counterfact.json") -> str:
    with pytest.raises(FactsError) as info:
        load_counterfact_file(_write(tmp_path / name, records))
    return str(info.value)


def test_error_missing_nested_target(tmp_path):
    records = json.loads(json.dumps(NESTED))
    records[1]["requested_rewrite"]["target_true"] = {"id": "Q90"}
    message = _error(tmp_path, records)
    assert "counterfact.json record 1" in message
    assert "'requested_rewrite.target_true.str' is missing" in message
    del records[1]["requested_rewrite"]["target_true"]
    assert "'requested_rewrite.target_true.str' is missing" in _error(tmp_path, records)


def test_error_bad_fields(tmp_path):
    records = json.loads(json.dumps(FLAT))
    del records[2]["relation_id"]
    message = _error(tmp_path, records, "flat.jsonl")
    assert "flat.jsonl record 2" in message and "'relation_id' is missing" in message
    records = json.loads(json.dumps(FLAT))
    records[0]["subject"] = 17
    message = _error(tmp_path, records)
    assert "record 0" in message and "'subject' is int; expected a string" in message
    records = json.loads(json.dumps(KNOWN_RECORDS))
    records[0]["attribute"] = "  "
    assert "'attribute' is empty" in _error(tmp_path, records)
    records = [{"subject": "Paris", "prompt": "Rome is the capital of", "target_true": "Italy", "relation_id": "r"}]
    message = _error(tmp_path, records)
    assert "record 0" in message and "'prompt'" in message and "neither '{}' nor the subject" in message
    records = [{"subject": "Paris", "target_true": "France", "relation_id": "r"}]
    assert "'template' is missing" in _error(tmp_path, records)
    records = [{"requested_rewrite": {"prompt": "{} and {} are", "subject": "a", "relation_id": "r",
                                      "target_true": {"str": "b"}}}]
    assert "exactly one '{}'" in _error(tmp_path, records)
    assert "record 0: expected an object" in _error(tmp_path, ["just a string"])


def test_error_empty_and_malformed_files(tmp_path):
    for name, text in [("empty.json", ""), ("blank.jsonl", "\n\n"), ("list.json", "[]")]:
        path = tmp_path / name
        path.write_text(text)
        with pytest.raises(FactsError, match=rf"{name}: .*(empty|no records)"):
            load_counterfact_file(path)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(FLAT[0]) + "\n{not json\n")
    with pytest.raises(FactsError, match=r"bad.jsonl line 2: not valid JSON"):
        load_counterfact_file(bad)
    with pytest.raises(FactsError, match="no such file"):
        load_counterfact_file(tmp_path / "missing.json")
    scalar = tmp_path / "scalar.json"
    scalar.write_text("3")
    with pytest.raises(FactsError, match="expected a list of CounterFact records"):
        load_counterfact_file(scalar)


# --------------------------------------------------------------------------------------------------
# the real CounterFact samples (shared/realdata, when present)


@pytest.mark.skipif(not COUNTERFACT.is_file(), reason=f"{COUNTERFACT} is absent")
def test_real_counterfact_500():
    facts = load_counterfact_file(COUNTERFACT)
    assert len(facts) == 500
    assert all(f.template.count("{}") == 1 and f.object == f.object.strip() and f.object for f in facts)
    assert len({f.relation_id for f in facts}) > 20
    pairs = make_pairs(facts, 200, seed=0)
    assert len(pairs) == 200
    assert all(p.original.template == p.counterfactual.template for p in pairs)


@pytest.mark.skipif(not KNOWN.is_file(), reason=f"{KNOWN} is absent")
def test_real_known_facts():
    facts = load_counterfact_file(KNOWN)
    assert len(facts) == len(json.loads(KNOWN.read_text()))
    assert facts[0] == Fact("Vinson Massif", "P30", "{} is located in the continent", "Antarctica")
    pairs = make_pairs(facts, 300, seed=0)
    assert len(pairs) == 300


# --------------------------------------------------------------------------------------------------
# Hugging Face loader


def test_hf_loader_offline_message(tmp_path):
    code = ("from introspect.sources.facts import load_counterfact_hf, FactsError\n"
            "try:\n"
            "    load_counterfact_hf('no-such-owner/no-such-counterfact')\n"
            "except FactsError as exc:\n"
            "    print('ERROR', exc)\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"),
           "HF_DATASETS_CACHE": str(tmp_path / "datasets")}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.startswith("ERROR")]
    assert len(lines) == 1 and "\n" not in lines[0]
    message = lines[0]
    assert "'no-such-owner/no-such-counterfact'" in message
    assert "'files' backend" in message


def test_pairs_option_key(facts):
    first_letter = lambda option: option[0].lower()  # noqa: E731  (a stand-in for a tokenizer's first token)
    pairs = make_pairs(facts, 100, seed=0, option_key=first_letter)
    assert pairs
    for pair in pairs:
        assert len({first_letter(o) for o in pair.options}) == len(pair.options)
    few = [_fact(f"s{i}", f"same{i}") for i in range(6)]
    assert make_pairs(few, 10, seed=0, option_key=first_letter) == []  # one key: relation skipped


def test_load_jsonl_with_other_suffix(tmp_path):
    path = tmp_path / "facts.txt"
    path.write_text("".join(json.dumps(r) + "\n" for r in KNOWN_RECORDS * 2))
    assert len(load_counterfact_file(path)) == 2
    single = tmp_path / "one.json"
    single.write_text(json.dumps(KNOWN_RECORDS[0]))
    assert len(load_counterfact_file(single)) == 1
