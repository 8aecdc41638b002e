"""The JSON Lines reader shared by the facts, questions and corpus sources."""

import gzip
import json

import pytest

from introspect.sources.records import read_jsonl


def test_a_line_separator_inside_a_json_string_does_not_end_the_line():
    # U+2028 / U+2029 / U+0085 / form feed are legal unescaped in a JSON string; str.splitlines() split there
    texts = ["a\u2028b", "c\u2029d", "e\u0085f", "g\x0ch", "plain"]
    text = "".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts)
    assert [r["text"] for r in read_jsonl(text, "docs.jsonl")] == texts


def test_crlf_lines_and_blank_lines_read_and_bad_lines_are_named():
    assert read_jsonl('{"a": 1}\r\n\r\n{"a": 2}\r\n', "x.jsonl") == [{"a": 1}, {"a": 2}]
    with pytest.raises(ValueError, match=r"x.jsonl line 3: not valid JSON"):
        read_jsonl('{"a": 1}\n\n{"a": \n', "x.jsonl")


NOT_UTF8 = b'{"text": "caf\xe9"}\n'  # Latin-1, as a spreadsheet export might write it


@pytest.mark.parametrize("name, content", [
    ("facts.json", b'[{"case_id": 1}]\n' + NOT_UTF8),
    ("facts.jsonl", b'{"case_id": 1}\n' + NOT_UTF8),
])
def test_a_facts_file_that_is_not_utf8_is_named_with_its_line(tmp_path, name, content):
    from introspect.sources.facts import FactsError, load_counterfact_file

    (tmp_path / name).write_bytes(content)
    with pytest.raises(FactsError, match=rf"{name} line 2: byte 0xe9 .* is not UTF-8"):
        load_counterfact_file(tmp_path / name)


@pytest.mark.parametrize("name, content", [
    ("questions.json", b'[\n' + NOT_UTF8 + b']'),
    ("questions.jsonl", NOT_UTF8),
    ("algebra_test.csv", b'"1+1?",1,2,3,4,B\n"caf\xe9",1,2,3,4,A\n'),
])
def test_a_question_file_that_is_not_utf8_is_named_with_its_line(tmp_path, name, content):
    from introspect.sources.questions import QuestionsError, load_question_file

    (tmp_path / name).write_bytes(content)
    with pytest.raises(QuestionsError, match=rf"{name} (line|row) [12]: .*not UTF-8"):
        load_question_file(tmp_path / name)


@pytest.mark.parametrize("name, content", [
    ("doc.txt", b"first paragraph\n\n\ncaf\xe9\n"),
    ("docs.jsonl", NOT_UTF8),
    ("docs.json", b"[" + NOT_UTF8 + b"]"),
    ("docs.jsonl.gz", gzip.compress(NOT_UTF8)),
    ("broken.jsonl.gz", b"not gzip at all"),
    ("damaged.jsonl.gz", (lambda gz: gz[:12] + b"\xff" * 16 + gz[28:])(gzip.compress(NOT_UTF8 * 20))),  # zlib.error
])
def test_a_corpus_file_that_cannot_be_decoded_is_named(tmp_path, name, content):
    from introspect.sources.corpus import CorpusError, file_documents

    (tmp_path / name).write_bytes(content)
    with pytest.raises(CorpusError, match=rf"{name}( line \d+: byte 0xe9 .* is not UTF-8|: cannot be read)"):
        file_documents(tmp_path / name)
