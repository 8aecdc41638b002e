"""The JSON Lines reader shared by the facts, questions and corpus sources."""

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
