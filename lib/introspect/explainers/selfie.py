"""SelfIE: an *untrained* model reads v written over its input embeddings (paper section 3.2, appendix F.1).

The untrained baseline of Table 1 and Table 4. Following the paper : v is normalised to unit
norm, multiplied by each scale of ``(1, 5, 10, 25, 50)`` and written over every placeholder of the F.1 prompt
at the embedding layer; the model continues greedily for 25 tokens. The paper reports the best of the five
scales per item (an upper bound on SelfIE), so every scale's description is kept as a *candidate* and the
scoring stage takes the per-item maximum of each metric.

F.1 prompts (the placeholder appears twice):
- base models: ``What is the meaning of the word '<v>'? The meaning of the word '<v>' is``
- instruct models: user ``Briefly define the word '<v>'.``, assistant turn opened with
  ``The meaning of the word '<v>' is``.
The paper's text prints the slot as ``' v '``; we read the spaces as typesetting of the math symbol and put
the placeholder directly between the quotes, as in Kharlapenko et al.'s prompts.

The *interpreting* model (the untrained model that reads v) is named by the method: ``selfie`` is the
table's target itself, ``selfie-<model>`` another registry model of the same hidden size, e.g. the target's
instruct variant (the paper's Table 1 has SelfIE rows for Llama-3.1-8B and Llama-3.1-8B-Instruct, both
reading Llama-3.1-8B's vectors). An instruct model gets the instruct prompt, a base model the base prompt.
"""

from __future__ import annotations

from typing import Sequence

import polars as pl
import torch
from tqdm import tqdm

from introspect.config import SELFIE_DEFAULTS
from introspect.explainers.model import VECTOR_TOKENS, add_vector_tokens, grow_embeddings
from introspect.models.chat import render_chat

SCALES = tuple(SELFIE_DEFAULTS["scales"])


# the SelfIE method names (torch-free, for the rules and tables) are in introspect.names


BASE_PROMPT = "What is the meaning of the word '{v}'? The meaning of the word '{v}' is"


CHAT_USER = "Briefly define the word '{v}'."


CHAT_ANSWER = "The meaning of the word '{v}' is"


def selfie_prompt(tokenizer, chat: bool) -> tuple[list[int], list[int]]:
    """Token ids of the F.1 prompt and the positions of its placeholders (one id, written twice)."""
    add_vector_tokens(tokenizer)
    slot = VECTOR_TOKENS[1]
    if chat:
        text = render_chat(tokenizer, [{"role": "user", "content": CHAT_USER.format(v=slot)}])
        text += CHAT_ANSWER.format(v=slot)
    else:
        text = BASE_PROMPT.format(v=slot)
    ids = tokenizer(text, add_special_tokens=not chat).input_ids
    slot_id = tokenizer.convert_tokens_to_ids(slot)
    positions = [i for i, t in enumerate(ids) if t == slot_id]
    if len(positions) != 2:
        raise ValueError(f"the SelfIE prompt should hold the placeholder twice, found {len(positions)}: {text!r}")
    return ids, positions


def selfie_embeddings(lm, ids: Sequence[int], positions: Sequence[int], vectors: torch.Tensor,
                      scale: float) -> torch.Tensor:
    """(B, T, d) input embeddings of the prompt with scale * v / ||v|| written over every placeholder."""
    embed = lm.get_input_embeddings()
    weight = embed.weight
    base = embed(torch.tensor([list(ids)], device=weight.device))
    unit = vectors.to(weight.device, torch.float32)
    unit = unit / unit.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    out = base.expand(len(vectors), -1, -1).clone()
    for pos in positions:
        out[:, pos] = (scale * unit).to(out.dtype)
    return out


@torch.no_grad()
def selfie_describe(lm, tokenizer, vectors: torch.Tensor, chat: bool, scales: Sequence[float] = SCALES,
                    max_new_tokens: int = SELFIE_DEFAULTS["max_new_tokens"],
                    batch_size: int = SELFIE_DEFAULTS["batch_size"]) -> dict[float, list[str]]:
    """Greedy SelfIE descriptions of every vector at every scale: ``{scale: [description per vector]}``.

    The prompt is the same for every vector, so batches need no padding.
    """
    if vectors.ndim != 2 or vectors.shape[1] != lm.config.get_text_config().hidden_size:
        raise ValueError(f"SelfIE reads vectors of the model's own hidden size "
                         f"{lm.config.get_text_config().hidden_size}; got shape {tuple(vectors.shape)}")
    ids, positions = selfie_prompt(tokenizer, chat)
    grow_embeddings(lm, len(tokenizer))  # a row for the placeholder id (its embedding is overwritten anyway)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    out: dict[float, list[str]] = {}
    bar = tqdm(total=len(scales) * len(vectors), desc="selfie", unit="vec", mininterval=5)
    for scale in scales:
        texts: list[str] = []
        for start in range(0, len(vectors), batch_size):
            chunk = vectors[start:start + batch_size]
            embeds = selfie_embeddings(lm, ids, positions, chunk, float(scale))
            mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=embeds.device)
            generated = lm.generate(inputs_embeds=embeds, attention_mask=mask, do_sample=False,
                                    max_new_tokens=max_new_tokens, pad_token_id=pad,
                                    eos_token_id=tokenizer.eos_token_id)
            texts += [t.strip() for t in tokenizer.batch_decode(generated, skip_special_tokens=True)]
            bar.update(len(chunk))
        out[float(scale)] = texts
    bar.close()
    return out


def selfie_frame(items: pl.DataFrame, described: dict[float, list[str]]) -> pl.DataFrame:
    """Long predictions (item_id, prediction, candidate): one row per item and scale, scale order."""
    parts = [pl.DataFrame({"item_id": items["item_id"], "prediction": texts,
                           "candidate": [f"{scale:g}v"] * items.height})
             for scale, texts in described.items()]
    return pl.concat(parts)
