"""Subject-relation-object facts and the counterfactual pairs (x, x') of activation patching.

Paper section 2.3 and appendix E.2: an input x ("Paris is the capital of") and a counterfactual x' with the
same relation but another subject and object ("Rome is the capital of") are both followed by the same five
answer options ("Respond with one of France or Spain or UK or Italy or Egypt or unknown and nothing else.").
The facts come from

- the project's builtin table (``introspect/data/facts.json``): easy, well-known facts that targets as
  small as SmolLM2-135M can answer, so that the offline pipeline has pairs the target gets right;
- a CounterFact file (:func:`load_counterfact_file`: JSON, JSONL or Parquet) in any of three schemas:
  the original nested one (``requested_rewrite``), ROME's known-facts one (``attribute``/``template``) and a
  flat one (``subject``, ``template``/``relation``/``prompt``, ``target_true``, ``relation_id``);
- a Hugging Face dataset with one of those schemas (:func:`load_counterfact_hf`).
"""

from __future__ import annotations

import collections
import dataclasses
import importlib.resources
import json
import logging
import random
import string
from pathlib import Path
from typing import Any, Callable, Hashable, Iterable, Iterator, Mapping, Sequence

import polars as pl

from introspect.sources.records import read_jsonl, read_text

log = logging.getLogger(__name__)


PAPER_PROMPT = "{prompt}\nRespond with one of {options} or unknown and nothing else."


OPTION_SEPARATOR = " or "


UNKNOWN = "unknown"


PROMPT_FIELDS = ("prompt", "statement", "options", "subject")


BUILTIN_RESOURCE = "facts.json"


_ENUMERATE_LIMIT = 50_000  # a relation with at most this many candidate pairs has them all listed


class FactsError(ValueError):
    """A fact file, dataset or table cannot be read as facts; the message says where and what is expected."""


@dataclasses.dataclass(frozen=True)
class Fact:
    """One subject-relation-object fact; `template` holds one ``{}`` where the subject goes."""

    subject: str
    relation_id: str
    template: str
    object: str

    @property
    def prompt(self) -> str:
        """The statement to complete, e.g. 'Paris is the capital of' (the object comes next)."""
        return self.template.format(self.subject)


@dataclasses.dataclass(frozen=True)
class FactPair:
    """A counterfactual pair (x, x'): same relation and options, different subject and object."""

    original: Fact
    counterfactual: Fact
    options: tuple[str, ...]


def builtin_facts() -> list[Fact]:
    """The project's own fact table, in file order (deterministic), so that offline runs need no download."""
    resource = importlib.resources.files("introspect").joinpath("data", BUILTIN_RESOURCE)
    where = f"introspect/data/{BUILTIN_RESOURCE}"
    try:
        table = json.loads(resource.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise FactsError(f"{where}: cannot read the builtin fact table: {exc}") from exc
    return _parse_table(table, where)


def _parse_table(table: Any, where: str) -> list[Fact]:
    """Facts of a table in the builtin format: {"relations": {id: {"template": ...}}, "facts": [...]}."""
    if not isinstance(table, dict) or not isinstance(table.get("relations"), dict) \
            or not isinstance(table.get("facts"), list):
        raise FactsError(f"{where}: expected an object with 'relations' (an object) and 'facts' (a list)")
    templates: dict[str, str] = {}
    for relation_id, relation in table["relations"].items():
        template = relation.get("template") if isinstance(relation, dict) else None
        if not isinstance(template, str):
            raise FactsError(f"{where}: relation {relation_id!r}: 'template' is missing; expected a string "
                             "with one '{}' for the subject")
        templates[relation_id] = _check_template(template, where, f"relation {relation_id!r}", "template")
    facts = []
    for index, record in enumerate(table["facts"]):
        context = f"fact {index}"
        if not isinstance(record, dict):
            raise FactsError(f"{where} {context}: expected an object, got {type(record).__name__}")
        relation_id = _required_str(record, ("relation_id",), where, context)
        if relation_id not in templates:
            raise FactsError(f"{where} {context}: 'relation_id' {relation_id!r} is not one of the table's "
                             f"relations {sorted(templates)}")
        facts.append(Fact(subject=_required_str(record, ("subject",), where, context),
                          relation_id=relation_id, template=templates[relation_id],
                          object=_required_str(record, ("object",), where, context)))
    if not facts:
        raise FactsError(f"{where}: the table has no facts")
    return facts


def load_counterfact_file(path: str | Path) -> list[Fact]:
    """Facts of a user's CounterFact file (JSON list, JSONL or Parquet), so that any fact set can be used."""
    path = Path(path)
    where = str(path)
    if not path.is_file():
        raise FactsError(f"{where}: no such file; expected a CounterFact file (.json, .jsonl or .parquet)")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        try:
            import pyarrow.parquet as pq

            records: list[Any] = pq.read_table(path).to_pylist()
        except Exception as exc:  # pyarrow raises several types for a damaged file
            raise FactsError(f"{where}: cannot read as Parquet: {exc}") from exc
    else:
        text = read_text(path, FactsError)
        if not text.strip():
            raise FactsError(f"{where}: the file is empty; expected a list of CounterFact records")
        if suffix == ".jsonl":
            records = read_jsonl(text, where, FactsError)
        else:
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                if suffix == ".json":
                    raise FactsError(f"{where}: not valid JSON ({exc}); expected a list of CounterFact "
                                     "records (or JSON Lines in a .jsonl file)") from exc
                data = read_jsonl(text, where, FactsError)  # another suffix: try JSON Lines
            if isinstance(data, dict) and "facts" in data and "relations" in data:
                return _parse_table(data, where)  # the builtin table's own format
            if isinstance(data, dict):
                data = [data]  # a single record
            if not isinstance(data, list):
                raise FactsError(f"{where}: expected a list of CounterFact records, got {type(data).__name__}")
            records = data
    if not records:
        raise FactsError(f"{where}: the file has no records; expected a list of CounterFact records")
    return parse_records(records, where)


def load_counterfact_hf(dataset_id: str, split: str = "train") -> list[Fact]:
    """Facts of a CounterFact dataset on the Hugging Face hub (e.g. 'azhx/counterfact'), for cluster runs."""
    where = f"{dataset_id} [{split}]"
    try:
        import datasets

        dataset = datasets.load_dataset(dataset_id, split=split)
    except Exception as exc:  # hub, network, offline-mode and missing-dataset errors all end here
        reason = " ".join(str(exc).split()) or type(exc).__name__
        if len(reason) > 300:
            reason = reason[:297] + "..."
        raise FactsError(
            f"cannot load Hugging Face dataset {dataset_id!r} (split {split!r}): {type(exc).__name__}: {reason}. "
            "Without network access, download the data once and use the 'files' backend "
            "(a CounterFact .json/.jsonl/.parquet file)"
        ) from exc
    records = list(dataset)
    if not records:
        raise FactsError(f"{where}: the dataset has no records")
    return parse_records(records, where)


def parse_records(records: Sequence[Any], where: str) -> list[Fact]:
    """Parse CounterFact records of any supported schema; `where` names their source in errors."""
    return [_parse_record(record, index, where) for index, record in enumerate(records)]


def _parse_record(record: Any, index: int, where: str) -> Fact:
    """One record: nested CounterFact, ROME known-facts, or flat."""
    context = f"record {index}"
    if not isinstance(record, dict):
        raise FactsError(f"{where} {context}: expected an object with CounterFact fields, got "
                         f"{type(record).__name__}")
    record = {key: value for key, value in record.items() if value is not None}  # Parquet fills gaps with None
    if "requested_rewrite" in record:
        rewrite = record["requested_rewrite"]
        if not isinstance(rewrite, dict):
            raise FactsError(f"{where} {context}: 'requested_rewrite' must be an object with prompt, subject, "
                             "target_true and relation_id")
        subject = _required_str(rewrite, ("subject",), where, context, prefix="requested_rewrite.")
        template = _required_str(rewrite, ("prompt",), where, context, prefix="requested_rewrite.",
                                 strip=False)
        template = _to_template(template, subject, where, context, "requested_rewrite.prompt")
        target = rewrite.get("target_true")
        if isinstance(target, dict):
            obj = _required_str(target, ("str",), where, context, prefix="requested_rewrite.target_true.")
        elif target is None:
            raise FactsError(f"{where} {context}: 'requested_rewrite.target_true.str' is missing; expected "
                             "the true object as a string")
        else:
            raise FactsError(f"{where} {context}: 'requested_rewrite.target_true' is "
                             f"{type(target).__name__}; expected an object with a 'str' field")
        relation_id = _required_str(rewrite, ("relation_id",), where, context, prefix="requested_rewrite.")
        return Fact(subject=subject, relation_id=relation_id, template=template, object=obj)
    subject = _required_str(record, ("subject",), where, context)
    if "attribute" in record:  # ROME known-facts: subject, attribute, template, relation_id
        obj = _required_str(record, ("attribute",), where, context)
    else:
        target = record.get("target_true", record.get("object"))
        if isinstance(target, dict):
            obj = _required_str(target, ("str",), where, context, prefix="target_true.")
        else:
            obj = _required_str(record, ("target_true", "object"), where, context)
    template = _template_of(record, subject, where, context)
    relation_id = _required_str(record, ("relation_id",), where, context)
    return Fact(subject=subject, relation_id=relation_id, template=template, object=obj)


def _template_of(record: Mapping[str, Any], subject: str, where: str, context: str) -> str:
    """The relation template of a flat or known-facts record: 'template', 'relation' or 'prompt'."""
    for field in ("template", "relation", "prompt"):
        value = record.get(field)
        if isinstance(value, str) and "{}" in value:
            return _check_template(value, where, context, field)
    for field in ("prompt", "template"):
        value = record.get(field)
        if isinstance(value, str) and value.strip():
            return _to_template(value, subject, where, context, field)
    raise FactsError(f"{where} {context}: 'template' is missing; expected a relation template with one "
                     "'{}' for the subject (as 'template', 'relation' or 'prompt'), or a 'prompt' that "
                     "contains the subject")


def _to_template(text: str, subject: str, where: str, context: str, field: str) -> str:
    """A template from a text that has '{}' or the subject itself (a filled-in prompt)."""
    if "{}" in text:
        return _check_template(text, where, context, field)
    position = text.find(subject)
    if position < 0:
        raise FactsError(f"{where} {context}: {field!r} {text!r} has neither '{{}}' nor the subject "
                         f"{subject!r}; expected a template such as '{{}} is the capital of'")
    escape = lambda part: part.replace("{", "{{").replace("}", "}}")  # noqa: E731
    template = escape(text[:position]) + "{}" + escape(text[position + len(subject):])
    return _check_template(template, where, context, field)


def _check_template(template: str, where: str, context: str, field: str) -> str:
    """A template must hold exactly one '{}' and no other format fields."""
    template = template.rstrip()
    names = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None] \
        if _parses(template) else None
    if names != [""]:
        raise FactsError(f"{where} {context}: {field!r} {template!r} is not a relation template; expected "
                         "exactly one '{}' for the subject and no other braces")
    return template


def _parses(template: str) -> bool:
    try:
        list(string.Formatter().parse(template))
    except ValueError:
        return False
    return True


def _required_str(record: Mapping[str, Any], fields: Sequence[str], where: str, context: str,
                  prefix: str = "", strip: bool = True) -> str:
    """The first present field of `fields` as a non-empty string (stripped), or an error naming it."""
    for field in fields:
        if field in record and record[field] is not None:
            value = record[field]
            if not isinstance(value, str):
                raise FactsError(f"{where} {context}: '{prefix}{field}' is {type(value).__name__}; expected "
                                 "a string")
            if not value.strip():
                raise FactsError(f"{where} {context}: '{prefix}{field}' is empty; expected a non-empty string")
            return value.strip() if strip else value
    name = " or ".join(f"'{prefix}{field}'" for field in fields)
    raise FactsError(f"{where} {context}: {name} is missing; expected a non-empty string")


def first_word(option: str) -> str:
    """Default option key: options that share a first word would share a first answer token."""
    words = option.split()
    return words[0].lower() if words else ""


def make_pairs(facts: Iterable[Fact], n_pairs: int, seed: int, n_options: int = 5,
               option_key: Callable[[str], Hashable] = first_word) -> list[FactPair]:
    """Counterfactual pairs (x, x'), round-robin over relations, deterministic for `seed`.

    x and x' share relation and template (so the relation tokens line up) and differ in subject and object.
    The options are both objects and ``n_options - 2`` other objects of the same relation, in a seeded
    random order. No two options have the same ``option_key`` (default: the first word, lower-cased; pass
    e.g. the target tokenizer's first answer token so that every option starts with its own token).
    Relations with fewer than `n_options` distinct keys are skipped with a warning. Each relation draws
    from its own random stream (seeded by `seed` and the relation id): adding a relation changes no other.
    """
    if n_options < 2:
        raise ValueError(f"n_options must be at least 2 (the two objects of a pair), got {n_options}")
    if n_pairs < 0:
        raise ValueError(f"n_pairs must be >= 0, got {n_pairs}")
    by_relation = _by_relation(facts)
    streams: list[Iterator[FactPair]] = []
    for relation_id, relation_facts in by_relation.items():
        keys = dict.fromkeys(option_key(f.object) for f in relation_facts)
        if len(keys) < n_options:
            log.warning("relation %s skipped: %d distinct objects (by option key), fewer than n_options=%d",
                        relation_id, len(keys), n_options)
            continue
        rng = random.Random(f"{seed}:{relation_id}")
        streams.append(_relation_pairs(relation_facts, n_options, option_key, rng))
    pairs: list[FactPair] = []
    while streams and len(pairs) < n_pairs:
        for stream in list(streams):
            if len(pairs) >= n_pairs:
                break
            pair = next(stream, None)
            if pair is None:
                streams.remove(stream)
            else:
                pairs.append(pair)
    if len(pairs) < n_pairs:
        log.warning("only %d counterfactual pairs are possible from %d relations; %d were asked for",
                    len(pairs), len(by_relation), n_pairs)
    return pairs


def _by_relation(facts: Iterable[Fact]) -> dict[str, list[Fact]]:
    """The facts a pair can be drawn from, by relation: exact duplicates dropped (order kept), and facts whose
    object collides with the 'unknown' option left out."""
    by_relation: dict[str, list[Fact]] = {}
    for fact in dict.fromkeys(facts):
        if fact.object.strip().lower() == UNKNOWN:
            log.debug("skipping %r: its object collides with the 'unknown' option", fact)
            continue
        by_relation.setdefault(fact.relation_id, []).append(fact)
    return by_relation


def option_counts(facts: Iterable[Fact], option_key: Callable[[str], Hashable] = first_word) -> dict[str, int]:
    """Distinct options (by `option_key`) of each relation, as :func:`make_pairs` counts them: a relation with
    fewer than n_options is skipped there."""
    return {relation: len({option_key(f.object) for f in group}) for relation, group in _by_relation(facts).items()}


def _relation_pairs(facts: list[Fact], n_options: int, option_key: Callable[[str], Hashable],
                    rng: random.Random) -> Iterator[FactPair]:
    """All distinct pairs of one relation in a random order (listed when few, else sampled)."""
    key_of = {fact.object: option_key(fact.object) for fact in facts}
    groups = [group for group in _group_by_template(facts) if len(group) > 1]
    counts = [_candidate_count(group, key_of) for group in groups]
    total = sum(counts)
    if total == 0:
        return
    objects_by_key: dict[Hashable, list[str]] = {}  # the relation's objects, per key, in file order
    for fact in facts:
        objects = objects_by_key.setdefault(key_of[fact.object], [])
        if fact.object not in objects:
            objects.append(fact.object)

    def pair(original: Fact, counterfactual: Fact) -> FactPair:
        taken = (key_of[original.object], key_of[counterfactual.object])
        others = [key for key in objects_by_key if key not in taken]
        chosen = [rng.choice(objects_by_key[key]) for key in rng.sample(others, n_options - 2)]
        options = [original.object, counterfactual.object] + chosen
        rng.shuffle(options)
        return FactPair(original, counterfactual, tuple(options))

    def pairable(original: Fact, counterfactual: Fact) -> bool:
        return (original.subject != counterfactual.subject
                and key_of[original.object] != key_of[counterfactual.object])

    if total <= _ENUMERATE_LIMIT:
        candidates = [(group[i], group[j]) for group in groups for i in range(len(group))
                      for j in range(len(group)) if pairable(group[i], group[j])]
        rng.shuffle(candidates)
        for original, counterfactual in candidates:
            yield pair(original, counterfactual)
        return
    seen: set[tuple[int, int, int]] = set()
    misses = 0
    while len(seen) < total and misses < 10_000:
        g = rng.choices(range(len(groups)), weights=counts)[0]
        group = groups[g]
        i, j = rng.randrange(len(group)), rng.randrange(len(group))
        if (g, i, j) in seen or not pairable(group[i], group[j]):
            misses += 1
            continue
        misses = 0
        seen.add((g, i, j))
        yield pair(group[i], group[j])


def _group_by_template(facts: list[Fact]) -> list[list[Fact]]:
    groups: dict[str, list[Fact]] = {}
    for fact in facts:
        groups.setdefault(fact.template, []).append(fact)
    return list(groups.values())


def _candidate_count(group: list[Fact], key_of: Mapping[str, Hashable]) -> int:
    """Ordered pairs of `group` with different subjects and different option keys."""
    n = len(group)
    by_key = collections.Counter(key_of[f.object] for f in group)
    by_subject = collections.Counter(f.subject for f in group)
    by_subject_key = collections.Counter((f.subject, key_of[f.object]) for f in group)
    different_key = n * n - sum(c * c for c in by_key.values())
    same_subject_different_key = sum(c * c for c in by_subject.values()) - sum(
        c * c for c in by_subject_key.values())
    return different_key - same_subject_different_key


def format_prompt(fact: Fact, options: Sequence[str], template: str = PAPER_PROMPT) -> str:
    """The target's input for a fact, from a configurable prompt template.

    Fields: ``{prompt}`` (alias ``{statement}``): the statement to complete, e.g. 'Paris is the capital
    of'; ``{options}``: the options joined by ' or ' (the template adds 'or unknown' itself, as the paper's
    does); ``{subject}``: the subject alone. Literal braces are written ``{{`` and ``}}``.
    """
    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as exc:
        raise ValueError(f"prompt template {template!r} is malformed: {exc}") from None
    unknown = fields - set(PROMPT_FIELDS)
    if unknown:
        raise ValueError(f"prompt template {template!r} has unknown fields {sorted(unknown)}; "
                         f"the fields are {{prompt}} (or {{statement}}), {{options}}, {{subject}}")
    if not fields & {"prompt", "statement"}:
        raise ValueError(f"prompt template {template!r} has no {{prompt}} field for the statement")
    return template.format(prompt=fact.prompt, statement=fact.prompt,
                           options=OPTION_SEPARATOR.join(options), subject=fact.subject)


def load_facts(backend: str, path: str | None = None, dataset: str | None = None, split: str = "train"):
    """Facts from the configured backend (builtin table, a CounterFact-format file, or the hub)."""
    if backend == "builtin":
        return builtin_facts()
    if backend == "files":
        return load_counterfact_file(path)
    if backend == "hf":
        return load_counterfact_hf(dataset, split=split)
    raise ValueError(f"patching.facts.backend: unknown backend {backend!r}; use builtin, files or hf")


def pairs_frame(pairs) -> "pl.DataFrame":
    """Counterfactual pairs as a table (one row per pair, options as a list)."""
    return pl.DataFrame({
        "pair_id": list(range(len(pairs))),
        "relation_id": [p.original.relation_id for p in pairs],
        "template": [p.original.template for p in pairs],
        "subject": [p.original.subject for p in pairs],
        "object": [p.original.object for p in pairs],
        "counterfactual_subject": [p.counterfactual.subject for p in pairs],
        "counterfactual_object": [p.counterfactual.object for p in pairs],
        "options": [list(p.options) for p in pairs],
    }, schema_overrides={"pair_id": pl.Int64})


def pairs_from_frame(df) -> list:
    """The inverse of :func:`pairs_frame`."""
    from introspect.sources.facts import Fact, FactPair

    return [
        FactPair(Fact(r["subject"], r["relation_id"], r["template"], r["object"]),
                 Fact(r["counterfactual_subject"], r["relation_id"], r["template"], r["counterfactual_object"]),
                 tuple(r["options"]))
        for r in df.iter_rows(named=True)
    ]
