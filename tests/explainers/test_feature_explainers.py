"""The feature-description explainer: the appendix-D questions."""

from __future__ import annotations

from introspect.explainers.features import FEATURE_PROMPTS, feature_question


def test_six_appendix_d_questions_with_layer_and_vector():
    assert len(FEATURE_PROMPTS) == 6
    assert all("{vector}" in p and "{layer}" in p for p in FEATURE_PROMPTS)
    assert feature_question(FEATURE_PROMPTS[4], 12) == "What does {vector} mean at layer 12?"
