"""The input-ablation (hint) explainer: prompts and examples of appendix D and F.3."""

from __future__ import annotations

import polars as pl
import transformers

from introspect.explainers.hints import EXPLAIN_QUESTION, explainer_prompt, hint_examples, hint_explanation
from introspect.groundtruth.hints import (
    SYSTEM_PROMPT,
)

ROW = {"question_id": "q/0", "subject": "q", "question": "What is 2 + 2?", "A": "3", "B": "4", "C": "5", "D": "22",
       "answer": "B"}


def test_explainer_examples_follow_appendix_d_and_f3(smollm2_tokenizer_dir):
    tok = transformers.AutoTokenizer.from_pretrained(smollm2_tokenizer_dir)
    row = ROW | {"hint": "Hint: C", "answer_plain": "B", "has_changed": True}
    assert hint_explanation(row) == "The most likely output would change to <<<Answer: B>>>."
    assert hint_explanation(row | {"has_changed": False}) == "The output would remain unchanged from <<<Answer: B>>>."
    trained = explainer_prompt(row, "trained")
    assert trained.endswith("Hint: C\n\n" + EXPLAIN_QUESTION)
    untrained = explainer_prompt(row, "untrained")
    assert untrained.startswith(trained) and "Replace X with the answer letter (A, B, C, or D)." in untrained
    data = hint_examples(pl.DataFrame([row]), tok, "trained", chat=True)
    item = data.items[0]
    learned = tok.decode([t for t, label in zip(item.input_ids, item.labels) if label != -100])
    assert learned == "The most likely output would change to <<<Answer: B>>>." + tok.eos_token
    assert SYSTEM_PROMPT in tok.decode(item.input_ids) and item.vector_pos == -1 and data.vectors is None
