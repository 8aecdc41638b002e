"""Readers of record files shared by every data source (facts, questions, corpus)."""

from __future__ import annotations

import json
from typing import Any


def read_jsonl(text: str, where: str, error: type[Exception] = ValueError,
               record: str = "CounterFact record") -> list[Any]:
    """Records of a JSON Lines text (blank lines skipped); a bad line raises `error` naming it.

    Lines end at "\n" (and "\r\n") only, as JSON Lines defines them: str.splitlines() would also split at
    U+2028, U+2029, U+0085 and form feeds, which JSON allows unescaped inside a string (real web text has
    them)."""
    records = []
    for number, line in enumerate(text.split("\n"), start=1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise error(f"{where} line {number}: not valid JSON ({exc.msg}); expected one {record} "
                            "per line") from exc
    return records
