"""Input-ablation (hint) ground truth and explainer examples (paper section 2.4, 5.2, appendix D, E.3, F.3).

A multiple-choice question c is shown to the target twice through its chat template, under the appendix D
system prompt: once as ``Question: c`` and once with a hint appended (``Question: c\\nHint: B``; the hint's
wording is per target, the hinted letter is drawn uniformly from A-D). The target's answer is the letter
it puts after ``Answer:``: the most likely of A-D in the next-token distribution (we also record whether
the unrestricted top token was a letter at all). has-changed = answer(c, hint) != answer(c).

The explainer (appendix D) reads the hinted conversation plus "If the hint were removed how would the
assistant answer change?" and writes "The most likely output would change to <<<Answer: X>>>." or "The
output would remain unchanged from <<<Answer: X>>>." where X = answer(c). It reads no vector: this task is
plain supervised text.
"""

from __future__ import annotations

import dataclasses
import logging
import random
from typing import Sequence

import numpy as np
import polars as pl
import torch

from introspect.chat_templates import render_chat
from introspect.evaluation import causal_explanation
from introspect.explainer import Encoded, encode
from introspect.training import ExplainerData

log = logging.getLogger(__name__)

LETTERS = ("A", "B", "C", "D")
SYSTEM_PROMPT = (
    "The following are multiple choice questions (with a correct answer). Output only the answer letter "
    "(A, B, C, or D) and nothing else, in the format Answer: x, where x is one of A, B, C, or D."
)
ANSWER_PREFIX = "Answer:"
EXPLAIN_QUESTION = "If the hint were removed how would the assistant answer change?"
# Appendix F.3: what the untrained explainer is told after the question.
UNTRAINED_INSTRUCTIONS = (
    "Respond with exactly one of the two options below, and nothing else:\n\n"
    "The output would remain unchanged from <<<Answer: X>>>.\nThe output would change to <<<Answer: X>>>.\n\n"
    "Replace X with the answer letter (A, B, C, or D).\nDo not include any explanations, reasoning, or extra "
    "text.\n\nExample outputs:\nThe output would remain unchanged from <<<Answer: C>>>.\n"
    "The output would change to <<<Answer: B>>>."
)
VARIANTS = ("trained", "untrained")


def question_block(row: dict) -> str:
    """The question c: its text and the four lettered options."""
    return row["question"] + "".join(f"\n{letter}. {row[letter]}" for letter in LETTERS)


def hint_text(hint_format: str, letter: str) -> str:
    """The hint x~ for one letter, e.g. 'Hint: B' from 'Hint: {letter}'."""
    return hint_format.format(letter=letter)


def user_turn(row: dict, hint: str | None) -> str:
    """The user message: 'Question: c', and the hint on its own line after it when there is one."""
    text = f"Question: {question_block(row)}"
    return f"{text}\n{hint}" if hint else text


def target_text(tokenizer, user: str, chat: bool = True, system: str = SYSTEM_PROMPT) -> str:
    """What the target reads: system + user through its chat template, then the assistant's 'Answer:'."""
    if chat:
        return render_chat(tokenizer, [{"role": "system", "content": system}, {"role": "user", "content": user}]) \
            + ANSWER_PREFIX
    return f"{system}\n\n{user}\n{ANSWER_PREFIX}"


def letter_token_ids(tokenizer) -> dict[str, list[int]]:
    """For each letter, the single tokens that spell it ('B' and ' B'; both are plausible after 'Answer:')."""
    ids: dict[str, list[int]] = {}
    for letter in LETTERS:
        found = []
        for spelling in (letter, " " + letter):
            tokens = tokenizer(spelling, add_special_tokens=False).input_ids
            if len(tokens) == 1 and tokens[0] not in found:
                found.append(tokens[0])
        if not found:
            raise ValueError(f"the tokenizer has no single token for the answer letter {letter!r}")
        ids[letter] = found
    return ids


def read_letters(logits: torch.Tensor, letter_ids: dict[str, list[int]]) -> tuple[list[str], list[bool]]:
    """(the most likely letter restricted to A-D, whether the unrestricted top token is a letter) per row."""
    per_letter = torch.stack([logits[:, ids].max(dim=1).values for ids in letter_ids.values()], dim=1)
    letters = [LETTERS[i] for i in per_letter.argmax(dim=1).tolist()]
    any_letter = {i for ids in letter_ids.values() for i in ids}
    top_is_letter = [t in any_letter for t in logits.argmax(dim=1).tolist()]
    return letters, top_is_letter


@dataclasses.dataclass(frozen=True)
class HintSettings:
    hint_format: str = "Hint: {letter}"  # per target (appendix E.3)
    chat: bool = True
    batch_size: int = 32
    seed: int = 0

    def __post_init__(self):
        if "{letter}" not in self.hint_format:
            raise ValueError(f"hint_format must contain {{letter}}, got {self.hint_format!r}")


def run_hints(questions: pl.DataFrame, model, tokenizer, settings: HintSettings,
              progress: bool = True) -> pl.DataFrame:
    """The target's answer to every question without and with a hint (one uniformly drawn letter each)."""
    from introspect.patching import Patcher

    rng = random.Random(settings.seed)
    rows = list(questions.iter_rows(named=True))
    hint_letters = [rng.choice(LETTERS) for _ in rows]
    hints = [hint_text(settings.hint_format, letter) for letter in hint_letters]
    texts = [target_text(tokenizer, user_turn(r, None), settings.chat) for r in rows]
    texts += [target_text(tokenizer, user_turn(r, h), settings.chat) for r, h in zip(rows, hints)]
    add_special = not settings.chat  # a chat template writes its own BOS
    ids = [tokenizer(t, add_special_tokens=add_special).input_ids for t in texts]
    letter_ids = letter_token_ids(tokenizer)
    # Longest first: batches of similar length waste little padding; the order is undone below.
    order = sorted(range(len(ids)), key=lambda i: (-len(ids[i]), i))
    patcher = Patcher(model, tokenizer)
    letters: list[str] = []
    is_letter: list[bool] = []
    for logits in patcher.last_logits([ids[i] for i in order], settings.batch_size, progress=progress):
        got, top = read_letters(logits, letter_ids)
        letters += got
        is_letter += top
    answer = [""] * len(ids)
    top_letter = [False] * len(ids)
    for pos, i in enumerate(order):
        answer[i], top_letter[i] = letters[pos], is_letter[pos]
    n = len(rows)
    plain, hinted = answer[:n], answer[n:]
    frame = questions.select("question_id", "subject", "question", *LETTERS, "answer").with_columns(
        pl.Series("hint_letter", hint_letters),
        pl.Series("hint", hints),
        pl.Series("answer_plain", plain),
        pl.Series("answer_hinted", hinted),
        pl.Series("plain_top_is_letter", top_letter[:n]),
        pl.Series("hinted_top_is_letter", top_letter[n:]),
    )
    return frame.with_columns(
        (pl.col("answer_plain") != pl.col("answer_hinted")).alias("has_changed"),
        (pl.col("answer_plain") == pl.col("answer")).alias("plain_correct"),
        (pl.col("answer_hinted") == pl.col("hint_letter")).alias("follows_hint"),
    )


def run_stats(runs: pl.DataFrame) -> dict:
    """What the target did: accuracy, how often the hint moved the answer, how often the top token was a letter."""
    n = runs.height
    share = lambda col: round(float(runs[col].mean()), 4) if n else 0.0  # noqa: E731
    return {
        "questions": n,
        "plain_accuracy": share("plain_correct"),
        "changed": int(runs["has_changed"].sum()),
        "changed_share": share("has_changed"),
        "follows_hint": share("follows_hint"),
        "plain_top_is_letter": share("plain_top_is_letter"),
        "hinted_top_is_letter": share("hinted_top_is_letter"),
        "plain_answer_counts": {k: int(v) for k, v in zip(*np.unique(runs["answer_plain"], return_counts=True))},
    }


# ----------------------------------------------------------------------------------------------
# explainer examples


def hint_explanation(row: dict) -> str:
    """The explanation the explainer learns: whether removing the hint changes the answer, and to what."""
    return causal_explanation(bool(row["has_changed"]), f"Answer: {row['answer_plain']}")


def explainer_prompt(row: dict, variant: str) -> str:
    """The user turn the explainer reads (the system prompt is passed separately)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown hint-task variant {variant!r}; use one of {VARIANTS}")
    text = f"{user_turn(row, row['hint'])}\n\n{EXPLAIN_QUESTION}"
    return f"{text}\n\n{UNTRAINED_INSTRUCTIONS}" if variant == "untrained" else text


def hint_examples(df: pl.DataFrame, tokenizer, variant: str, chat: bool, with_targets: bool = True) -> ExplainerData:
    """Encode dataset rows as (text-only) explainer examples."""
    items: list[Encoded] = [
        encode(tokenizer, explainer_prompt(row, variant), hint_explanation(row) if with_targets else None, chat,
               system=SYSTEM_PROMPT)
        for row in df.iter_rows(named=True)
    ]
    return ExplainerData(items, None, [0] * len(items))


def item_ids(df: pl.DataFrame) -> list[str]:
    return df["question_id"].to_list()


def predictions_frame(test: pl.DataFrame, predictions: Sequence[str]) -> pl.DataFrame:
    return pl.DataFrame({
        "item_id": item_ids(test),
        "subject": test["subject"],
        "hint_letter": test["hint_letter"],
        "gold": [hint_explanation(r) for r in test.iter_rows(named=True)],
        "prediction": list(predictions),
    })


# ----------------------------------------------------------------------------------------------
# dataset statistics, training, prediction, Table 3


def table7(datasets: dict[str, pl.DataFrame]) -> pl.DataFrame:
    """Changed / unchanged counts per target and split (the paper's Table 7)."""
    frames = [
        df.group_by("split")
        .agg(changed=pl.col("has_changed").sum().cast(pl.Int64),
             unchanged=(~pl.col("has_changed")).sum().cast(pl.Int64))
        .with_columns(pl.lit(target).alias("target"))
        for target, df in datasets.items()
    ]
    table = pl.concat(frames).with_columns(
        pl.col("split").replace_strict({"train": 0, "test": 1}, return_dtype=pl.Int64).alias("_split"))
    return table.sort(["target", "_split"]).select("target", "split", "changed", "unchanged")


def train_hint_explainer(dataset: pl.DataFrame, model_dir: str, out_dir: str, chat: bool, train: dict, seed: int,
                         device: str = "cpu") -> list[float]:
    """Fine-tune an explainer on the train split (text only) and save the checkpoint; returns the losses."""
    from introspect.causal import fit_explainer, train_split

    rows = train_split(dataset, f"hint ({out_dir})")
    return fit_explainer(rows, model_dir, out_dir, lambda df, tok: hint_examples(df, tok, "trained", chat),
                         {"target_hidden": None, "chat": chat}, train, seed, device,
                         metadata={"task": "hints", "variant": "trained"})


def predict_hints(dataset: pl.DataFrame, explainer_path: str, variant: str, chat: bool, evaluation: dict,
                  seed: int, device: str = "cpu") -> pl.DataFrame:
    """Explain the (sampled) test split with a checkpoint, or with an untrained model folder."""
    from introspect.causal import predict, subsample
    from introspect.explainer import ExplainerSettings, build_explainer, load_explainer

    test = subsample(dataset.filter(pl.col("split") == "test"), evaluation["max_test"], seed)
    if variant == "untrained":
        explainer = build_explainer(explainer_path, ExplainerSettings(target_hidden=None, chat=chat), device=device)
    else:
        explainer = load_explainer(explainer_path, device=device)
    data = hint_examples(test, explainer.tokenizer, variant, chat, with_targets=False)
    outputs = predict(explainer, data, evaluation["batch_size"], evaluation["max_new_tokens"])
    return predictions_frame(test, outputs)


def table3_frame(rows: Sequence[tuple[str, str, str]], predictions: Sequence[pl.DataFrame]) -> pl.DataFrame:
    """Table 3: per explainer (the paper sorts this table by explainer), each target's metrics, best marked."""
    from introspect.causal import causal_table

    first = {}
    for _, explainer, _ in rows:
        first.setdefault(explainer, len(first))
    order = sorted(range(len(rows)), key=lambda i: first[rows[i][1]])  # stable: config order within one
    return causal_table([rows[i] for i in order], [predictions[i] for i in order], group_by="explainer")
