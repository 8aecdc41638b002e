"""Feature-description corpus: the builtin documents, the file backend's formats and errors, the train/eval split."""

from __future__ import annotations

import gzip
import json
import re

import polars as pl
import pytest
from conftest import REPO

from introspect.sources.corpus import (
    CorpusError,
    Document,
    build_corpus,
    builtin_documents,
    corpus_stats,
    file_documents,
    load_documents,
)

REALDATA = REPO.parent / "shared" / "realdata" / "web" / "dclm_majority_data.jsonl"


def words(text: str) -> int:
    return len(text.split())


def doc(i: int, n_words: int = 25, source: str = "s") -> Document:
    return Document(f"d{i}", source, " ".join(f"w{i}_{j}" for j in range(n_words)))


def long_text(tag: str, n: int = 30) -> str:
    return " ".join(f"{tag}{j}" for j in range(n))


@pytest.fixture(scope="module")
def builtin():
    return builtin_documents()


def test_builtin_documents_are_deterministic_and_large(builtin):
    again = builtin_documents()
    assert again == builtin
    assert sum(words(d.text) for d in builtin) >= 150_000
    assert len({d.doc_id for d in builtin}) == len(builtin)
    assert all(words(d.text) >= 20 for d in builtin)
    sources = {d.source.split(":")[-1] for d in builtin}
    assert sources == {"pydoc_data.topics", "stdlib", "facts"}
    assert any("capital of" in d.text for d in builtin if d.source == "introspect:facts")


def test_build_corpus_splits_whole_documents_every_period():
    docs = [doc(i) for i in range(20)]
    corpus = build_corpus(docs, eval_fraction=0.25, seed=0)
    assert corpus.columns == ["doc_id", "source", "text", "split"]
    assert corpus.height == 20
    assert sorted(corpus["doc_id"].to_list()) == sorted(d.doc_id for d in docs)
    # every 4th document after the shuffle is eval; texts are the documents' whole texts
    assert corpus["split"].to_list() == (["train"] * 3 + ["eval"]) * 5
    by_id = {d.doc_id: d.text for d in docs}
    assert all(by_id[i] == t for i, t in corpus.select("doc_id", "text").iter_rows())
    stats = corpus_stats(corpus)
    digest = stats.pop("text_sha256")
    assert stats.pop("python").count(".") == 2 and len(digest) == 64
    assert stats == {"documents": 20, "words": 500, "by_split": {"train": 15, "eval": 5}, "by_source": {"s": 20}}


def test_build_corpus_seed_fixes_the_order():
    docs = [doc(i) for i in range(30)]
    a = build_corpus(docs, 0.2, seed=1)
    assert a.equals(build_corpus(docs, 0.2, seed=1))
    b = build_corpus(docs, 0.2, seed=2)
    assert a["doc_id"].to_list() != b["doc_id"].to_list()
    assert sorted(a["doc_id"].to_list()) == sorted(b["doc_id"].to_list())
    assert a["doc_id"].to_list() != [d.doc_id for d in docs]  # shuffled


def test_build_corpus_honours_max_words():
    docs = [doc(i, n_words=25) for i in range(10)]
    corpus = build_corpus(docs, 0.5, seed=0, max_words=60)
    # 25 + 25 < 60 <= 75: the document that crosses the budget is the last one
    assert corpus.height == 3
    assert corpus_stats(corpus)["words"] == 75
    assert corpus["split"].to_list() == ["train", "eval", "train"]


def test_build_corpus_truncates_long_documents_to_max_doc_words():
    text = "alpha beta\ngamma\n\ndelta  epsilon zeta eta\ttheta"
    corpus = build_corpus([Document("a", "s", text), doc(1, n_words=3)], 0.5, seed=0, max_doc_words=4)
    texts = dict(corpus.select("doc_id", "text").iter_rows())
    assert texts["a"] == "alpha beta\ngamma\n\ndelta"  # four words, newlines kept, nothing after the 4th word
    assert texts["d1"] == doc(1, n_words=3).text  # short documents untouched
    assert all(words(t) <= 4 for t in texts.values())


def test_build_corpus_rejects_a_bad_eval_fraction():
    with pytest.raises(CorpusError, match="eval_fraction"):
        build_corpus([doc(0)], 1.0, seed=0)
    with pytest.raises(CorpusError, match="eval_fraction"):
        build_corpus([doc(0)], 0.0, seed=0)


def test_file_documents_reads_every_format(tmp_path):
    (tmp_path / "a.txt").write_text(long_text("t") + "\n\n" + long_text("u") + "\n\n\n" + long_text("v")
                                    + "\n\n \n\nshort text")
    records = [{"text": long_text("j"), "id": 1}, {"text": "too short"}, {"text": long_text("k")}]
    (tmp_path / "b.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n\n")
    with gzip.open(tmp_path / "c.jsonl.gz", "wt", encoding="utf-8") as handle:
        handle.write("\n".join(json.dumps(r) for r in records[:1]))
    (tmp_path / "d.json").write_text(json.dumps([{"text": long_text("x")}]))
    pl.DataFrame({"text": [long_text("p"), long_text("q")], "n": [1, 2]}).write_parquet(tmp_path / "e.parquet")
    (tmp_path / "ignored.csv").write_text("text\nnot read\n")
    docs = file_documents(tmp_path)
    got = [(d.doc_id, d.source, d.text.split()[0]) for d in docs]
    assert got == [
        ("a.txt:0", "files:a.txt", "t0"),  # a single blank line keeps paragraphs in one document
        ("a.txt:1", "files:a.txt", "v0"),
        ("b.jsonl:0", "files:b.jsonl", "j0"),
        ("b.jsonl:2", "files:b.jsonl", "k0"),
        ("c.jsonl.gz:0", "files:c.jsonl.gz", "j0"),
        ("d.json:0", "files:d.json", "x0"),
        ("e.parquet:0", "files:e.parquet", "p0"),
        ("e.parquet:1", "files:e.parquet", "q0"),
    ]
    assert docs[0].text == long_text("t") + "\n\n" + long_text("u")
    # one file on its own, and another text field
    (tmp_path / "f.jsonl").write_text(json.dumps({"body": long_text("b")}) + "\n")
    only = file_documents(tmp_path / "f.jsonl", text_field="body")
    assert [d.text for d in only] == [long_text("b")]
    assert load_documents("files", path=str(tmp_path / "d.json"))[0].text == long_text("x")


def test_file_documents_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"text": long_text("a")}) + "\n" + json.dumps({"body": "x"}) + "\n")
    with pytest.raises(CorpusError, match=r"bad\.jsonl record 1: no 'text' field"):
        file_documents(bad)
    notext = tmp_path / "num.json"
    notext.write_text(json.dumps([{"text": 3}]))
    with pytest.raises(CorpusError, match=r"num\.json record 0: 'text' is int"):
        file_documents(notext)
    broken = tmp_path / "broken.jsonl"
    broken.write_text("{not json\n")
    with pytest.raises(CorpusError, match=r"broken\.jsonl line 1"):
        file_documents(broken)
    unknown = tmp_path / "corpus.csv"
    unknown.write_text("text\nhello\n")
    with pytest.raises(CorpusError, match=r"corpus\.csv: unknown corpus file type"):
        file_documents(unknown)
    missing = tmp_path / "nowhere.jsonl"
    with pytest.raises(CorpusError, match=r"nowhere\.jsonl does not exist"):
        file_documents(missing)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.md").write_text("x")
    with pytest.raises(CorpusError, match="holds no"):
        file_documents(empty)
    short = tmp_path / "short.txt"
    short.write_text("only a few words")
    with pytest.raises(CorpusError, match=r"short\.txt has no document with >= 20 words"):
        file_documents(short)
    notlist = tmp_path / "obj.json"
    notlist.write_text(json.dumps({"text": long_text("o")}))
    with pytest.raises(CorpusError, match=r"obj\.json: expected a JSON list"):
        file_documents(notlist)


def test_load_documents_checks_its_backend_and_options():
    with pytest.raises(CorpusError, match="unknown backend 'web'"):
        load_documents("web")
    with pytest.raises(CorpusError, match="path is not set"):
        load_documents("files")
    with pytest.raises(CorpusError, match="dataset is not set"):
        load_documents("hf")


@pytest.mark.skipif(not REALDATA.exists(), reason=f"{REALDATA} is not present")
def test_files_backend_reads_the_shared_web_sample():
    docs = load_documents("files", path=str(REALDATA), min_words=20)
    assert len(docs) > 100
    assert all(d.source == "files:dclm_majority_data.jsonl" and words(d.text) >= 20 for d in docs)
    first = json.loads(REALDATA.read_text(encoding="utf-8").splitlines()[0])["text"]
    if words(first) >= 20:
        assert docs[0].doc_id.endswith(":0") and docs[0].text == re.sub(r"\n{3,}", "\n\n", first.strip())
    corpus = build_corpus(docs, 0.2, seed=0, max_words=20_000, max_doc_words=500)
    assert 20_000 <= corpus_stats(corpus)["words"] < 20_500
    assert set(corpus["split"]) == {"train", "eval"}


@pytest.mark.parametrize("n_docs", [1, 2])
def test_a_corpus_too_small_for_both_splits_is_an_error_naming_the_keys(n_docs):
    # one document and eval_fraction 0.2: no eval document; the SAE stage would fail three jobs later
    with pytest.raises(CorpusError, match=r"features.corpus: \d document\(s\) give 0 eval .* raise eval_fraction"):
        build_corpus([doc(i) for i in range(n_docs)], eval_fraction=0.2, seed=0)
