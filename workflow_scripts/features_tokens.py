"""Snakemake wrapper: tokenise the corpus with the target's tokenizer."""

import transformers

from introspect.groundtruth.activations import tokenize_corpus
from introspect.runlog import logged
from introspect.schemas import read_table, write_table

with logged(snakemake.log[0]) as log:  # noqa: F821 (injected by Snakemake)
    params = snakemake.params  # noqa: F821
    tokenizer = transformers.AutoTokenizer.from_pretrained(snakemake.input.tokenizer)  # noqa: F821
    corpus = read_table(snakemake.input.corpus, "features_corpus")  # noqa: F821
    tokens = tokenize_corpus(corpus, tokenizer, params.seq_len, params.max_tokens)
    log.info("%d tokens in %d sequences (%d eval tokens)", tokens.height, tokens["seq_id"].n_unique(),
             (tokens["split"] == "eval").sum())
    write_table(tokens, snakemake.output[0], "feature_tokens")  # noqa: F821
