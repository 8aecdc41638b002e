"""Chat templates the model registry can give to tokenizers that ship without one.

The Gemma-3-270M GGUF is the *base* model: its tokenizer has no chat template, yet the causal tasks
(appendix D of the paper) put a system prompt and a user turn through the target's chat template. We give
it Gemma's own turn format, written here for this project: Gemma has no system role, so a system message
is placed at the start of the first user turn, separated by a blank line.
"""

from __future__ import annotations

GEMMA3 = (
    "{{ bos_token }}"
    "{%- set ns = namespace(system='') -%}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'system' -%}"
    "{%- set ns.system = message['content'] + '\n\n' -%}"
    "{%- else -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "{{ '<start_of_turn>' + role + '\n' + ns.system + message['content'] | trim + '<end_of_turn>\n' }}"
    "{%- set ns.system = '' -%}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)


TEMPLATES: dict[str, str] = {"gemma3": GEMMA3}


def chat_template(name: str) -> str:
    """The Jinja chat template registered under `name`."""
    try:
        return TEMPLATES[name]
    except KeyError:
        raise KeyError(
            f"unknown chat template {name!r}; the registry knows {sorted(TEMPLATES)}"
        ) from None


def render_chat(tokenizer, messages: list[dict[str, str]]) -> str:
    """The conversation through the tokenizer's chat template, ending with the assistant's turn opened.

    Thinking is switched off (``enable_thinking=False``): a hybrid reasoning model such as Qwen3 would
    otherwise open its turn with a <think> block instead of the answer the tasks read; templates without
    that switch ignore it.
    """
    if not tokenizer.chat_template:
        raise ValueError("the tokenizer has no chat template: give the model a `chat_template` in the registry "
                         "(e.g. gemma3) or turn chat prompts off for it")
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, enable_thinking=False)
