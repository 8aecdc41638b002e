"""Readers of record files shared by every data source (facts, questions, corpus)."""

from __future__ import annotations

import gzip
import json
import zlib
from pathlib import Path
from typing import Any


def read_text(path: str | Path, error: type[Exception] = ValueError) -> str:
    """A UTF-8 text file (gzip-compressed when its name ends in .gz) as one string; a byte that is not UTF-8
    raises `error` naming the file, the line and the byte instead of a bare UnicodeDecodeError."""
    path = Path(path)
    try:
        raw = gzip.decompress(path.read_bytes()) if path.name.lower().endswith(".gz") else path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError; a damaged body, zlib.error
        raise error(f"{path}: cannot be read ({exc})") from exc
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise error(f"{path} line {line}: byte {raw[exc.start]:#04x} (at offset {exc.start}) is not UTF-8; save "
                    "the file as UTF-8") from None


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
