"""The answer format of the causal tasks: how an explainer states an outcome, and how it is parsed.

An explainer's answer to a causal question is one statement (paper appendix D, F.2, F.3)::

    The most likely output would change to <<<X>>>.
    The output would remain unchanged from <<<X>>>.

Parsing rules (``parse_causal``), decided here and tested in ``tests/scoring/test_causal_metrics.py``:

- case-insensitive; runs of whitespace between words are accepted; "most likely" is optional, so the
  untrained prompts' "The output would change to <<<X>>>." parses like the trained template;
- the statement must open the output (surrounding whitespace aside): a preamble ("Sure! The output ...")
  makes the output unparseable, as the prompts ask for the statement "and nothing else";
- text after the first statement is ignored, except a second statement that disagrees with the first
  (both options given: a hedge), which makes the output unparseable; a repeated identical statement
  (greedy decoding that loops) is fine;
- a statement needs both ``<<<`` and ``>>>``; its content is the text between them, ``strip()``-ed and
  otherwise kept exactly (case included); content holding another ``<<<`` is unparseable.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

CHANGED_TEMPLATE = "The most likely output would change to <<<{content}>>>."


UNCHANGED_TEMPLATE = "The output would remain unchanged from <<<{content}>>>."


_STATEMENT = re.compile(
    r"the\s+(?:most\s+likely\s+)?output\s+would\s+(?P<verb>change\s+to|remain\s+unchanged\s+from)"
    r"\s*<<<(?P<content>.*?)>>>",
    re.IGNORECASE | re.DOTALL,
)


@dataclass(frozen=True)
class CausalExplanation:
    """What an explainer said about an intervention: did the output change, and to/from what."""

    has_changed: bool | None
    content: str | None
    valid: bool


INVALID = CausalExplanation(has_changed=None, content=None, valid=False)


def _statement(match: re.Match[str]) -> CausalExplanation | None:
    content = match.group("content")
    if "<<<" in content:
        return None
    changed = match.group("verb").lower().startswith("change")
    return CausalExplanation(has_changed=changed, content=content.strip(), valid=True)


def parse_causal(text: str | None) -> CausalExplanation:
    """Read the has-changed value and content from an explainer output; unparseable gives ``valid=False``."""
    if not text:
        return INVALID
    stripped = text.strip()
    first = _STATEMENT.match(stripped)
    if first is None:
        return INVALID
    parsed = _statement(first)
    if parsed is None:
        return INVALID
    for later in _STATEMENT.finditer(stripped, first.end()):
        other = _statement(later)
        if other is None or other != parsed:
            return INVALID
    return parsed


def causal_explanation(has_changed: bool, content: str) -> str:
    """The canonical training target for a causal-task example (paper appendix D)."""
    if "<<<" in content or ">>>" in content:
        raise ValueError(f"content {content!r} holds a <<< or >>> delimiter; its explanation would not parse")
    template = CHANGED_TEMPLATE if has_changed else UNCHANGED_TEMPLATE
    return template.format(content=content)
