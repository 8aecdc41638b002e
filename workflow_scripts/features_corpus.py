"""Snakemake wrapper: collect the corpus documents and split them into train/eval."""

import json

from introspect.sources.corpus import build_corpus, corpus_stats, load_documents
from introspect.runlog import logged
from introspect.schemas import write_table

with logged(snakemake.log[0]) as log:  # noqa: F821 (injected by Snakemake)
    options = dict(snakemake.params.corpus)  # noqa: F821
    backend = options.pop("backend")
    documents = load_documents(backend, **options)
    corpus = build_corpus(documents, options.get("eval_fraction", 0.2), snakemake.params.seed,  # noqa: F821
                          options.get("max_words"), options.get("max_doc_words"))
    write_table(corpus, snakemake.output.corpus, "features_corpus")  # noqa: F821
    stats = corpus_stats(corpus)
    log.info("corpus: %s", stats)
    with open(snakemake.output.stats, "w") as out:  # noqa: F821
        json.dump(stats, out, indent=2, sort_keys=True)
