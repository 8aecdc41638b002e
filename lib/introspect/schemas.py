"""Schemas of the Parquet tables passed between stages; checked when a table is written and when it is read.

Every table is a plain Parquet file that polars, pyarrow and ``datasets.load_dataset("parquet", ...)`` read
as it is. Column meanings:

patching_pairs (results/patching/pairs.parquet) — counterfactual pairs (x, x'):
  pair_id, relation_id, template ("{} is the capital of"), subject/object of x,
  counterfactual_subject/counterfactual_object of x', options (the shared answer options, in prompt order).

patching_sweep (results/patching/{target}/sweep.parquet) — one row per intervention:
  pair_id, relation_id, subject, counterfactual_subject, orig_object, new_object,
  prompt (x as the explainer sees it, no chat template), orig_pos (token index in the target's input),
  counterfact_pos (aligned index in x'), token (decoded x_t), token_type (appendix E.2, or the token's own
  text), chunk (index of the layer block), layers (the block's layers), original_continuation /
  patched_continuation (decoded top-1 next token), has_changed, vector (v = mean over the block's layers
  of h_{l,t'}(x'), float32, the target's hidden size).

patching_dataset (results/patching/{target}/dataset.parquet) — the sweep's columns plus split
  (train/test), after balancing.

hints_questions (results/hints/questions.parquet) — four-option questions:
  question_id, subject, question, A, B, C, D (option texts), answer (the correct letter).

hints_runs (results/hints/{target}/runs.parquet) — one row per question: the question's columns plus
  hint_letter (drawn uniformly), hint (its text), answer_plain / answer_hinted (the target's letter without /
  with the hint: the most likely of A-D after "Answer:"), plain_top_is_letter / hinted_top_is_letter (the
  unrestricted top token was a letter), has_changed (answer_hinted != answer_plain), plain_correct,
  follows_hint (answer_hinted == hint_letter).

hints_dataset (results/hints/{target}/dataset.parquet) — the runs' columns plus split, after balancing.

features_corpus (results/features/corpus.parquet) — documents: doc_id, source (where the text comes from),
  text, split (train: SAE training; eval: exemplars, FVU, eval vectors).

feature_tokens (results/{target}/features/tokens.parquet) — one row per content token: seq_id, doc_id, split,
  position (index in the model input; 0 = attention sink, never used), token_id, text (the document's
  characters from the previous token's end to this token's end).

feature_vectors (results/{target}/features/sae/layer{L}.parquet) — layer, feature, vector (unit decoder
  direction of the SAE feature, the target's hidden size).

feature_exemplars (results/{target}/features/exemplars/layer{L}.parquet) — layer, feature, max_activation,
  windows (eval window ids, top first), kinds (top/random per window), activations (per window, per token:
  the SAE encoder's activation of the feature).

feature_labels (results/{target}/features/labels/layer{L}.parquet) — layer, feature, label (chosen
  description), score (simulator score on the selecting exemplars), check_score (on the held-out half),
  random_candidate / random_score / random_check_score (a random candidate, for comparison), candidates,
  candidate_scores.

feature_train (results/{target}/features/train.parquet) — the training pool: item_id ("L{layer}/f{feature}"),
  layer, feature, row, label, score. The vectors are not in the table: row is the feature's row in
  results/{target}/features/train_vectors.safetensors (tensor ``vectors``, (n, d) float16, the unit decoder
  directions; read a chunk at a time with introspect.tensorfiles.RowFile), so that no stage holds all of them.

feature_eval (results/{target}/features/eval/{sae,act,dact}.parquet) — eval items: item_id, layer, vector,
  label (gold label of a held-out SAE feature; null for ACT/dACT), source (what the vector is), windows,
  kinds, activations (its exemplars, as in feature_exemplars; window ids refer to the eval windows of the
  target's tokens table, introspect.groundtruth.exemplars.make_windows).
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

# The named token types of a patching row (appendix E.2), in the order Table 6 lists them; any other token
# is its own type (its text).
TOKEN_TYPES = ("subject final", "relation", "orig answer option", "new answer option", "other answer option")
VECTOR = "float32 array"  # a fixed-size Array(Float32, d) column, any d

PATCHING_PAIRS = {
    "pair_id": pl.Int64, "relation_id": pl.String, "template": pl.String, "subject": pl.String,
    "object": pl.String, "counterfactual_subject": pl.String, "counterfactual_object": pl.String,
    "options": pl.List(pl.String),
}
PATCHING_SWEEP = {
    "pair_id": pl.Int64, "relation_id": pl.String, "subject": pl.String, "counterfactual_subject": pl.String,
    "orig_object": pl.String, "new_object": pl.String, "prompt": pl.String, "orig_pos": pl.Int64,
    "counterfact_pos": pl.Int64, "token": pl.String, "token_type": pl.String, "chunk": pl.Int64,
    "layers": pl.List(pl.Int64), "original_continuation": pl.String, "patched_continuation": pl.String,
    "has_changed": pl.Boolean, "vector": VECTOR,
}
PATCHING_DATASET = PATCHING_SWEEP | {"split": pl.String}

HINTS_QUESTIONS = {name: pl.String for name in ("question_id", "subject", "question", "A", "B", "C", "D", "answer")}
HINTS_RUNS = HINTS_QUESTIONS | {
    "hint_letter": pl.String, "hint": pl.String, "answer_plain": pl.String, "answer_hinted": pl.String,
    "plain_top_is_letter": pl.Boolean, "hinted_top_is_letter": pl.Boolean, "has_changed": pl.Boolean,
    "plain_correct": pl.Boolean, "follows_hint": pl.Boolean,
}
HINTS_DATASET = HINTS_RUNS | {"split": pl.String}

FEATURES_CORPUS = {"doc_id": pl.String, "source": pl.String, "text": pl.String, "split": pl.String}
FEATURE_TOKENS = {"seq_id": pl.Int64, "doc_id": pl.String, "split": pl.String, "position": pl.Int64,
                  "token_id": pl.Int64, "text": pl.String}
FEATURE_VECTORS = {"layer": pl.Int64, "feature": pl.Int64, "vector": VECTOR}
_EXEMPLAR_COLUMNS = {"windows": pl.List(pl.Int64), "kinds": pl.List(pl.String),
                     "activations": pl.List(pl.List(pl.Float32))}
FEATURE_EXEMPLARS = {"layer": pl.Int64, "feature": pl.Int64, "max_activation": pl.Float32} | _EXEMPLAR_COLUMNS
FEATURE_LABELS = {"layer": pl.Int64, "feature": pl.Int64, "label": pl.String, "score": pl.Float64,
                  "check_score": pl.Float64, "random_candidate": pl.String, "random_score": pl.Float64,
                  "random_check_score": pl.Float64, "candidates": pl.List(pl.String),
                  "candidate_scores": pl.List(pl.Float64)}
FEATURE_TRAIN = {"item_id": pl.String, "layer": pl.Int64, "feature": pl.Int64, "row": pl.Int64,
                 "label": pl.String, "score": pl.Float64}
FEATURE_EVAL = {"item_id": pl.String, "layer": pl.Int64, "vector": VECTOR, "label": pl.String,
                "source": pl.String} | _EXEMPLAR_COLUMNS

TABLES = {"patching_pairs": PATCHING_PAIRS, "patching_sweep": PATCHING_SWEEP, "patching_dataset": PATCHING_DATASET,
          "hints_questions": HINTS_QUESTIONS, "hints_runs": HINTS_RUNS, "hints_dataset": HINTS_DATASET,
          "features_corpus": FEATURES_CORPUS, "feature_tokens": FEATURE_TOKENS, "feature_vectors": FEATURE_VECTORS,
          "feature_exemplars": FEATURE_EXEMPLARS, "feature_labels": FEATURE_LABELS, "feature_train": FEATURE_TRAIN,
          "feature_eval": FEATURE_EVAL}


class SchemaError(ValueError):
    """A table does not have the columns or types its stage promises."""


def check_schema(df: pl.DataFrame, table: str, where: str | Path = "") -> pl.DataFrame:
    """Raise :class:`SchemaError` naming every missing, extra or mistyped column."""
    expected = TABLES[table]
    problems = []
    for name, dtype in expected.items():
        if name not in df.columns:
            problems.append(f"missing column {name!r}")
        elif dtype == VECTOR:
            actual = df.schema[name]
            if not (isinstance(actual, pl.Array) and actual.inner == pl.Float32):
                problems.append(f"column {name!r} is {actual}, expected a float32 array")
        elif df.schema[name] != dtype:
            problems.append(f"column {name!r} is {df.schema[name]}, expected {dtype}")
    problems += [f"unexpected column {name!r}" for name in df.columns if name not in expected]
    if problems:
        raise SchemaError(f"{where or table}: not a valid {table} table: " + "; ".join(problems))
    return df


ROW_GROUP_BYTES = 64 * 2**20  # a table with a vector column is written in row groups of about this many bytes


def write_table(df: pl.DataFrame, path: str | Path, table: str) -> Path:
    """Validate and write a stage's table (columns in schema order).

    A table with a vector column gets row groups of about :data:`ROW_GROUP_BYTES` of vectors, so that a reader
    that streams it (pyarrow ``iter_batches``) holds one small row group, not a quarter-million vectors."""
    check_schema(df, table, path)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    width = max([df.schema[name].size for name, dtype in TABLES[table].items() if dtype == VECTOR] or [0])
    rows = max(1024, ROW_GROUP_BYTES // (4 * width)) if width else None
    df.select(list(TABLES[table])).write_parquet(path, row_group_size=rows)
    return path


def read_table(path: str | Path, table: str) -> pl.DataFrame:
    """Read and validate a stage's table."""
    return check_schema(_read(path, None), table, path)


def read_columns(path: str | Path, table: str, columns: list[str]) -> pl.DataFrame:
    """Some columns of a stage's table (the file's whole schema is checked; only `columns` are read)."""
    schema = read_schema(path)
    check_schema(pl.DataFrame(schema=schema), table, path)
    return _read(path, columns)


def read_schema(path: str | Path) -> dict:
    """The column types of a Parquet file, read from its footer (no data)."""
    try:
        return pl.read_parquet_schema(path)
    except FileNotFoundError:
        raise SchemaError(f"{path} does not exist; re-run the rule that writes it") from None
    except Exception as exc:  # polars raises ComputeError for a file that is not Parquet
        raise SchemaError(f"{path}: not a readable Parquet file ({exc}); delete it and re-run the rule that "
                          "writes it") from None


def _read(path: str | Path, columns: list[str] | None) -> pl.DataFrame:
    try:
        return pl.read_parquet(path, columns=columns)
    except FileNotFoundError:
        raise SchemaError(f"{path} does not exist; re-run the rule that writes it") from None
    except pl.exceptions.ComputeError as exc:
        raise SchemaError(f"{path}: not a readable Parquet file ({exc}); delete it and re-run the rule that "
                          "writes it") from None
