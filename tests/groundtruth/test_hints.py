"""Hint (input ablation) ground truth: prompts on the shipped tokenizers, letter reading, the target's runs."""

from __future__ import annotations

import dataclasses

import polars as pl
import pytest
import torch
import transformers
from conftest import REPO, tiny_llama

from introspect.groundtruth.hints import (
    LETTERS,
    SYSTEM_PROMPT,
    HintSettings,
    hint_text,
    letter_token_ids,
    read_letters,
    run_hints,
    run_stats,
    switch_counts,
    target_text,
    user_turn,
)
from introspect.sources.questions import builtin_questions, load_mmlu_dir, questions_frame

REALDATA_MMLU = REPO.parent / "shared" / "realdata" / "mmlu"
ROW = {"question_id": "q/0", "subject": "q", "question": "What is 2 + 2?", "A": "3", "B": "4", "C": "5", "D": "22",
       "answer": "B"}


@pytest.fixture(scope="module")
def tiny_target(tmp_path_factory, smollm2_tokenizer_dir):
    out = tiny_llama(tmp_path_factory.mktemp("hints") / "tiny", smollm2_tokenizer_dir, n_layers=2)
    model = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    return model, transformers.AutoTokenizer.from_pretrained(out)


def test_user_turn_puts_the_hint_on_its_own_line_after_the_options():
    assert user_turn(ROW, None) == "Question: What is 2 + 2?\nA. 3\nB. 4\nC. 5\nD. 22"
    hinted = user_turn(ROW, hint_text("Hint: The answer is {letter}", "C"))
    assert hinted == "Question: What is 2 + 2?\nA. 3\nB. 4\nC. 5\nD. 22\nHint: The answer is C"
    with pytest.raises(ValueError, match="letter"):
        HintSettings(hint_format="Hint: B")


def test_smollm2_chat_template_system_user_and_answer_prefix(smollm2_tokenizer_dir):
    tok = transformers.AutoTokenizer.from_pretrained(smollm2_tokenizer_dir)
    text = target_text(tok, user_turn(ROW, "Hint: C"))
    assert text.startswith("<|im_start|>system\n" + SYSTEM_PROMPT + "<|im_end|>\n<|im_start|>user\nQuestion: ")
    assert text.endswith("D. 22\nHint: C<|im_end|>\n<|im_start|>assistant\nAnswer:")


def test_gemma3_registry_template_folds_the_system_prompt_into_the_user_turn(gemma3_tokenizer_dir):
    tok = transformers.AutoTokenizer.from_pretrained(gemma3_tokenizer_dir)
    text = target_text(tok, user_turn(ROW, "Hint: C"))
    assert text.startswith("<bos><start_of_turn>user\n" + SYSTEM_PROMPT + "\n\nQuestion: What is 2 + 2?")
    assert text.endswith("D. 22\nHint: C<end_of_turn>\n<start_of_turn>model\nAnswer:")
    assert text.count("<bos>") == 1


@pytest.mark.parametrize("fixture", ["smollm2_tokenizer_dir", "gemma3_tokenizer_dir"])
def test_letter_tokens_of_both_shipped_tokenizers(fixture, request):
    tok = transformers.AutoTokenizer.from_pretrained(request.getfixturevalue(fixture))
    ids = letter_token_ids(tok)
    assert list(ids) == list(LETTERS)
    for letter, found in ids.items():
        assert {tok.decode([i]).strip() for i in found} == {letter}
        assert tok(" " + letter, add_special_tokens=False).input_ids[0] in found


def test_read_letters_restricts_to_a_d_when_the_top_token_is_not_a_letter():
    letter_ids = {"A": [10, 20], "B": [11], "C": [12], "D": [13, 23]}
    logits = torch.zeros(3, 30)
    logits[0, 5] = 9.0  # top token: not a letter
    logits[0, 23] = 2.0  # ' D' beats the others among letters
    logits[1, 11] = 4.0  # top token is B
    logits[2, 5] = 1.0
    logits[2, 20] = 0.5
    letters, top = read_letters(logits, letter_ids)
    assert letters == ["D", "B", "A"]
    assert top == [False, True, False]


def test_run_hints_matches_single_prompt_forwards_and_is_deterministic(tiny_target):
    model, tok = tiny_target
    questions = questions_frame(builtin_questions(24, seed=0))
    settings = HintSettings(hint_format="Hint: {letter}", batch_size=5, seed=3)
    runs = run_hints(questions, model, tok, settings, progress=False)
    assert runs.height == 24 and set(runs["hint_letter"]) <= set(LETTERS)
    assert runs.equals(run_hints(questions, model, tok, settings, progress=False))
    # another batch size gives the same table (the workflow passes it as a resource: editing it re-runs nothing)
    assert runs.equals(run_hints(questions, model, tok, dataclasses.replace(settings, batch_size=24), progress=False))
    assert (runs["has_changed"] == (runs["answer_plain"] != runs["answer_hinted"])).all()
    ids = letter_token_ids(tok)
    for row in runs.head(4).iter_rows(named=True):
        for hint, column in ((None, "answer_plain"), (row["hint"], "answer_hinted")):
            enc = tok(target_text(tok, user_turn(row, hint)), add_special_tokens=False, return_tensors="pt")
            with torch.no_grad():
                logits = model(**enc).logits[:, -1]
            assert read_letters(logits, ids)[0][0] == row[column]


def test_hint_letters_are_drawn_uniformly(tiny_target):
    model, tok = tiny_target
    questions = questions_frame(builtin_questions(200, seed=0))
    runs = run_hints(questions, model, tok, HintSettings(batch_size=64), progress=False)
    counts = runs["hint_letter"].value_counts()
    assert counts.height == 4 and counts["count"].min() > 30


@pytest.mark.skipif(not (REALDATA_MMLU / "test").is_dir(), reason="shared/realdata/mmlu is not present")
def test_target_step_on_real_mmlu_subjects(tiny_target):
    model, tok = tiny_target
    questions = questions_frame(load_mmlu_dir(REALDATA_MMLU, ["anatomy", "astronomy", "virology"], "test")).head(30)
    runs = run_hints(questions, model, tok, HintSettings(batch_size=8), progress=False)
    assert runs.height == 30 and set(runs["subject"]) <= {"anatomy", "astronomy", "virology"}
    assert set(runs["answer_plain"]) <= set(LETTERS) and set(runs["answer"]) <= set(LETTERS)


def test_chat_prompts_switch_thinking_off(smollm2_tokenizer_dir):
    tok = transformers.AutoTokenizer.from_pretrained(smollm2_tokenizer_dir)
    # a Qwen3-style template: the assistant turn opens with an empty think block when thinking is off
    tok.chat_template = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}<assistant>"
                         "{% if enable_thinking is defined and not enable_thinking %}<think></think>{% endif %}")
    assert target_text(tok, "Question: q").endswith("<assistant><think></think>Answer:")


def _runs(plain: str, hint: str, hinted: str) -> pl.DataFrame:
    """Hint runs from three strings of letters (one character per question)."""
    frame = pl.DataFrame({"answer": ["A"] * len(plain), "answer_plain": list(plain), "hint_letter": list(hint),
                          "answer_hinted": list(hinted), "plain_top_is_letter": [True] * len(plain),
                          "hinted_top_is_letter": [True] * len(plain)})
    return frame.with_columns(
        (pl.col("answer_plain") != pl.col("answer_hinted")).alias("has_changed"),
        (pl.col("answer_plain") == pl.col("answer")).alias("plain_correct"),
        (pl.col("answer_hinted") == pl.col("hint_letter")).alias("follows_hint"),
    )


def test_switch_rate_leaves_out_hints_equal_to_the_unhinted_answer():
    # q0, q1: hint = unhinted answer (no switch possible); q2, q3 switch to the hint; q4 changes to another
    # letter; q5 ignores the hint
    runs = _runs(plain="AACCCC", hint="AABBBB", hinted="AABBDC")
    assert switch_counts(runs) == (4, 2, 0.5)
    stats = run_stats(runs)
    assert (stats["hint_differs"], stats["switched_to_hint"], stats["switch_rate"]) == (4, 2, 0.5)
    assert stats["follows_hint"] == round(4 / 6, 4)  # counts q0 and q1 too
    assert stats["changed"] == 3 and stats["changed_share"] == 0.5


def test_a_target_that_ignores_the_hint_has_switch_rate_zero():
    # the hint letter is drawn uniformly, so a deaf target "follows" the hint in ~1/4 of the questions
    runs = _runs(plain="ABCD" * 5, hint="AAAA" * 5, hinted="ABCD" * 5)
    stats = run_stats(runs)
    assert stats["switch_rate"] == 0.0 and stats["hint_differs"] == 15 and stats["follows_hint"] == 0.25


def test_switch_rate_is_none_when_every_hint_equals_the_unhinted_answer():
    stats = run_stats(_runs(plain="AB", hint="AB", hinted="CB"))
    assert (stats["hint_differs"], stats["switched_to_hint"], stats["switch_rate"]) == (0, 0, None)
