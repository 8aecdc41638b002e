"""Readers of record files shared by every data source (facts, questions, corpus)."""

from __future__ import annotations

import json
from typing import Any


def read_jsonl(text: str, where: str, error: type[Exception] = ValueError,
               record: str = "CounterFact record") -> list[Any]:
    """Records of a JSON Lines text (blank lines skipped); a bad line raises `error` naming it."""
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise error(f"{where} line {number}: not valid JSON ({exc.msg}); expected one {record} "
                            "per line") from exc
    return records
