"""Text corpus for feature descriptions (paper section 2.2): documents split into train and eval.

Backends:
- ``builtin`` (offline default): English prose that ships with Python itself — the help topics of the
  language reference (``pydoc_data.topics``) and the docstrings of the standard library's modules, classes
  and functions (read with ``ast``, never imported) — plus the sentences of the project's own fact table.
  Deterministic for a given Python version (the version is recorded in each document's ``source``).
- ``files``: the user's text (``.txt``: one document per paragraph group, groups separated by two or more
  blank lines), JSON Lines (``.jsonl``, ``.jsonl.gz``), JSON (a list of records) or Parquet, each record
  with a ``text`` field; a folder is read file by file in sorted order.
- ``hf``: a dataset on the Hugging Face hub (a FineWeb sample in the paper config), through ``datasets``.
"""

from __future__ import annotations

import ast
import json
import random
import re
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import polars as pl

from introspect.sources.records import read_jsonl, read_text


class CorpusError(ValueError):
    """The configured corpus cannot be read; the message names the file or setting."""


@dataclass(frozen=True)
class Document:
    doc_id: str
    source: str
    text: str


def _words(text: str) -> int:
    return len(text.split())


def _clean(text: str) -> str:
    return re.sub(r"\n{3,}", "\n\n", text.strip())


def python_topics() -> Iterator[Document]:
    """The interactive help topics of the Python language reference (``help('FORMATTING')`` etc.)."""
    from pydoc_data.topics import topics

    version = f"python-{sys.version_info.major}.{sys.version_info.minor}"
    for name in sorted(topics):
        yield Document(f"topic:{name}", f"{version}:pydoc_data.topics", _clean(topics[name]))


def stdlib_docstrings(min_words: int = 20) -> Iterator[Document]:
    """Docstrings of the standard library (module, class, function), in sorted file order; tests excluded."""
    root = Path(sysconfig.get_paths()["stdlib"])
    version = f"python-{sys.version_info.major}.{sys.version_info.minor}"
    files = sorted(root.glob("*.py")) + sorted(root.glob("*/*.py"))
    for path in files:
        rel = path.relative_to(root).as_posix()
        if any(part in {"test", "tests", "idlelib", "site-packages", "lib2to3"} for part in path.parts):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc and _words(doc) >= min_words:
                    name = getattr(node, "name", "<module>")
                    yield Document(f"doc:{rel}:{name}:{getattr(node, 'lineno', 0)}", f"{version}:stdlib", _clean(doc))


def fact_paragraphs(per_paragraph: int = 8) -> Iterator[Document]:
    """The project's fact table as plain sentences ("Paris is the capital of France."), in short paragraphs."""
    from introspect.sources.facts import builtin_facts

    facts = builtin_facts()
    for start in range(0, len(facts), per_paragraph):
        group = facts[start:start + per_paragraph]
        text = " ".join(f"{f.prompt} {f.object}." for f in group)
        yield Document(f"facts:{start // per_paragraph}", "introspect:facts", text)


def builtin_documents(min_words: int = 20) -> list[Document]:
    docs = [d for d in python_topics() if _words(d.text) >= min_words]
    docs += list(stdlib_docstrings(min_words))
    docs += list(fact_paragraphs())
    return docs


def _records_of(path: Path) -> list:
    name = path.name.lower()
    try:
        if name.endswith(".parquet"):
            return pl.read_parquet(path).to_dicts()
        if name.endswith(".jsonl.gz") or name.endswith(".json.gz"):  # .json.gz: JSON Lines too (Dolma, CC dumps)
            return read_jsonl(read_text(path, CorpusError), str(path), CorpusError, "record with a 'text' field")
        if name.endswith(".jsonl"):
            return read_jsonl(read_text(path, CorpusError), str(path), CorpusError, "record with a 'text' field")
        if name.endswith(".json"):
            records = json.loads(read_text(path, CorpusError))
            if not isinstance(records, list):
                raise CorpusError(f"{path}: expected a JSON list of records with a 'text' field")
            return records
        if name.endswith(".txt"):
            paragraphs = re.split(r"\n\s*\n\s*\n", read_text(path, CorpusError))
            return [{"text": p} for p in paragraphs]
    except (OSError, EOFError, json.JSONDecodeError, pl.exceptions.PolarsError) as exc:
        raise CorpusError(f"{path}: cannot be read ({exc})") from exc
    raise CorpusError(f"{path}: unknown corpus file type; use .txt, .jsonl, .jsonl.gz, .json or .parquet")


def file_documents(path: str | Path, text_field: str = "text", min_words: int = 20) -> list[Document]:
    """Documents of a file or of every corpus file in a folder (sorted), each record's `text_field`."""
    root = Path(path)
    if not root.exists():
        raise CorpusError(f"features.corpus.path: {root} does not exist; point it at a text/JSONL/Parquet "
                          "file or a folder of them")
    suffixes = (".txt", ".jsonl", ".jsonl.gz", ".json", ".json.gz", ".parquet")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name.lower().endswith(suffixes)) \
        if root.is_dir() else [root]
    if not files:
        raise CorpusError(f"features.corpus.path: {root} holds no .txt/.jsonl/.json/.parquet files")
    docs = []
    for file in files:
        for index, record in enumerate(_records_of(file)):
            if not isinstance(record, dict) or text_field not in record:
                raise CorpusError(f"{file} record {index}: no {text_field!r} field; every record needs the "
                                  "document text there (features.corpus.text_field names it)")
            text = record[text_field]
            if not isinstance(text, str):
                raise CorpusError(f"{file} record {index}: {text_field!r} is {type(text).__name__}, not text")
            if _words(text) >= min_words:
                docs.append(Document(f"{file.name}:{index}", f"files:{file.name}", _clean(text)))
    if not docs:
        raise CorpusError(f"features.corpus.path: {root} has no document with >= {min_words} words")
    return docs


def hf_documents(dataset: str, name: str | None = None, split: str = "train", text_field: str = "text",
                 max_docs: int = 10000, min_words: int = 20) -> list[Document]:
    """The first `max_docs` documents of a hub dataset, streamed (FineWeb: HuggingFaceFW/fineweb, sample-10BT)."""
    try:
        import datasets
    except ImportError as exc:  # pragma: no cover - datasets is a dependency
        raise CorpusError("features.corpus.backend 'hf' needs the `datasets` package") from exc
    try:
        stream = datasets.load_dataset(dataset, name, split=split, streaming=True)
    except Exception as exc:  # network, auth, unknown id: all end here
        raise CorpusError(f"features.corpus: cannot load {dataset!r} ({name}) from the hub ({exc}). Offline, use "
                          "backend: builtin, or backend: files with a local copy") from exc
    docs = []
    for index, record in enumerate(stream):
        text = record.get(text_field)
        if isinstance(text, str) and _words(text) >= min_words:
            docs.append(Document(f"{dataset}:{index}", f"hf:{dataset}", _clean(text)))
        if len(docs) >= max_docs:
            break
    if not docs:
        raise CorpusError(f"features.corpus: {dataset!r} gave no document with a {text_field!r} field")
    return docs


def load_documents(backend: str, **options) -> list[Document]:
    min_words = int(options.get("min_words", 20))
    if backend == "builtin":
        return builtin_documents(min_words)
    if backend == "files":
        if not options.get("path"):
            raise CorpusError("features.corpus.backend is 'files' but features.corpus.path is not set")
        return file_documents(options["path"], options.get("text_field", "text"), min_words)
    if backend == "hf":
        if not options.get("dataset"):
            raise CorpusError("features.corpus.backend is 'hf' but features.corpus.dataset is not set")
        return hf_documents(options["dataset"], options.get("name"), options.get("split", "train"),
                            options.get("text_field", "text"), int(options.get("max_docs", 10000)), min_words)
    raise CorpusError(f"features.corpus.backend: unknown backend {backend!r}; use builtin, files or hf")


def build_corpus(documents: Sequence[Document], eval_fraction: float, seed: int,
                 max_words: int | None = None, max_doc_words: int | None = None) -> pl.DataFrame:
    """Shuffle (seeded), cut to `max_words`, truncate long documents, and split whole documents train/eval.

    Every `round(1 / eval_fraction)`-th document after the shuffle is an eval document, so both splits
    sample the same sources in the same proportions.
    """
    if not 0 < eval_fraction < 1:
        raise CorpusError(f"features.corpus.eval_fraction must be in (0, 1), got {eval_fraction}")
    order = list(documents)
    random.Random(seed).shuffle(order)
    rows, total = [], 0
    period = max(2, round(1 / eval_fraction))
    for doc in order:
        text = doc.text
        if max_doc_words and _words(text) > max_doc_words:
            # cut after the max_doc_words-th word (words as _words counts them: newlines separate too)
            text = text[: list(re.finditer(r"\S+", text))[max_doc_words - 1].end()]
        rows.append({"doc_id": doc.doc_id, "source": doc.source, "text": text,
                     "split": "eval" if len(rows) % period == period - 1 else "train"})
        total += _words(text)
        if max_words and total >= max_words:
            break
    n_eval = sum(row["split"] == "eval" for row in rows)
    if n_eval == 0 or n_eval == len(rows):  # the SAE, the exemplars and the eval sets need both splits
        kept = f" (max_words {max_words} stopped after them)" if max_words and len(rows) < len(order) else ""
        raise CorpusError(f"features.corpus: {len(rows)} document(s){kept} give {n_eval} eval and "
                          f"{len(rows) - n_eval} train documents, but both splits need at least one (every "
                          f"{period}th document is an eval document, eval_fraction {eval_fraction}); give more "
                          "documents (a file per document, or paragraphs split by two blank lines in a .txt), "
                          "raise max_words or raise eval_fraction")
    return pl.DataFrame(rows, schema={"doc_id": pl.String, "source": pl.String, "text": pl.String,
                                      "split": pl.String})


def corpus_stats(corpus: pl.DataFrame) -> dict:
    import hashlib

    words = corpus["text"].map_elements(_words, return_dtype=pl.Int64)
    digest = hashlib.sha256("\x00".join(corpus["text"].to_list()).encode("utf-8")).hexdigest()
    return {"documents": corpus.height, "words": int(words.sum()), "python": sys.version.split()[0],
            "text_sha256": digest,
            "by_split": {s: int(corpus.filter(pl.col("split") == s).height) for s in ("train", "eval")},
            "by_source": {k: int(v) for k, v in corpus.group_by("source").len().sort("source").iter_rows()}}


def iter_texts(corpus: pl.DataFrame) -> Iterable[tuple[str, str, str]]:
    return corpus.select("doc_id", "split", "text").iter_rows()
