"""Input-ablation (hint) ground truth: the target's answers with and without a hint (paper section 2.4, appendix E.3).

A multiple-choice question c is shown to the target twice through its chat template, under the appendix D
system prompt: once as ``Question: c`` and once with a hint appended (``Question: c\nHint: B``; the hint's
wording is per target, the hinted letter is drawn uniformly from A-D). The target's answer is the letter
it puts after ``Answer:``: the most likely of A-D in the next-token distribution (we also record whether
the unrestricted top token was a letter at all). has-changed = answer(c, hint) != answer(c).

How often the hint moves the answer *to the hint letter* (:func:`switch_counts`) is counted only over the
questions whose hint letter differs from the unhinted answer: a hint equal to that answer cannot switch it,
and a target that ignores hints still "follows" one in about a quarter of the questions (the hint letter is
drawn uniformly from four).
"""

from __future__ import annotations

import dataclasses
import random

import numpy as np
import polars as pl
import torch

from introspect.models.chat import render_chat

LETTERS = ("A", "B", "C", "D")


SYSTEM_PROMPT = (
    "The following are multiple choice questions (with a correct answer). Output only the answer letter "
    "(A, B, C, or D) and nothing else, in the format Answer: x, where x is one of A, B, C, or D."
)


ANSWER_PREFIX = "Answer:"


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
    """(the most likely letter restricted to A-D, whether the unrestricted top token is a letter) per row.

    `logits` (B, vocab) may be on any device: the arg-maxes are taken there and only they come to the CPU."""
    per_letter = torch.stack([logits[:, ids].max(dim=1).values for ids in letter_ids.values()], dim=1)
    letters = [LETTERS[i] for i in per_letter.argmax(dim=1).cpu().tolist()]
    any_letter = {i for ids in letter_ids.values() for i in ids}
    top_is_letter = [t in any_letter for t in logits.argmax(dim=1).cpu().tolist()]
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
    """The target's answer to every question without and with a hint (one uniformly drawn letter each).

    The forward passes run where `model` is (any device and dtype; logits are read in float32) and the answers
    come back to the CPU batch by batch."""
    from introspect.groundtruth.patching import Patcher

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


def switch_counts(runs: pl.DataFrame) -> tuple[int, int, float | None]:
    """(hint_differs, switched, switch_rate) of hint runs (columns hint_letter, answer_plain, answer_hinted).

    hint_differs = questions whose hint letter differs from the unhinted answer (the denominator); switched =
    those of them whose hinted answer is the hint letter; switch_rate = switched / hint_differs (None when no
    hint differs). A hint equal to the unhinted answer is neither: the answer cannot switch to it."""
    differs = runs["hint_letter"] != runs["answer_plain"]
    switched = differs & (runs["answer_hinted"] == runs["hint_letter"])
    n_differs, n_switched = int(differs.sum()), int(switched.sum())
    return n_differs, n_switched, (round(n_switched / n_differs, 4) if n_differs else None)


def run_stats(runs: pl.DataFrame) -> dict:
    """What the target did: accuracy, how often the hint moved the answer, how often the top token was a letter.

    changed_share: the hinted answer differs from the unhinted one, over all questions. switch_rate: the hinted
    answer is the hint letter, over the `hint_differs` questions whose hint letter is not the unhinted answer
    (:func:`switch_counts`). follows_hint: the hinted answer is the hint letter, over *all* questions, so it
    includes the hints that equal the unhinted answer (about 1 in 4 for a target that ignores the hint)."""
    n = runs.height
    share = lambda col: round(float(runs[col].mean()), 4) if n else 0.0  # noqa: E731
    hint_differs, switched, switch_rate = switch_counts(runs)
    return {
        "questions": n,
        "plain_accuracy": share("plain_correct"),
        "changed": int(runs["has_changed"].sum()),
        "changed_share": share("has_changed"),
        "hint_differs": hint_differs,
        "switched_to_hint": switched,
        "switch_rate": switch_rate,
        "follows_hint": share("follows_hint"),
        "plain_top_is_letter": share("plain_top_is_letter"),
        "hinted_top_is_letter": share("hinted_top_is_letter"),
        "plain_answer_counts": {k: int(v) for k, v in zip(*np.unique(runs["answer_plain"], return_counts=True))},
    }
