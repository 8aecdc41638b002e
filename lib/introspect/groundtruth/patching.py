"""Activation-patching ground truth (paper section 2.3, appendix E.2).

For a counterfactual pair (x, x') that share a relation and five answer options, every token position t
of x and every block ("chunk") of the target's layers is an intervention: v = the mean over the chunk's
layers of h_{l,t'}(x') (t' = the aligned position in x') is written into every layer of the chunk at t,
and the top-1 next token is compared with the unpatched one.

Speed (measured in docs/benchmarks.md): interventions of many pairs share one batched forward pass (an nnsight
trace over a batch whose rows carry different patches); the token prefix that every prompt shares (the
chat template's system turn, a few-shot prefix) is run once and reused from the KV cache, because a patch
at t never changes anything before t; the vocabulary projection is computed for the last real token only.
Positions before the first token where x and x' differ are not run at all: their activations are
identical, so patching them cannot change anything.

Devices and memory: the model runs where it was loaded (``compute.device``). The counterfactual hidden
states are copied to the CPU one batch at a time, in the model's compute dtype (bfloat16 for the paper's
targets on a GPU), and only from the first position a patch can read; each patch vector (the chunk mean,
float32, the ``vector`` column of the sweep table) lives on the CPU, and only the vectors of one
forward pass go to the model's device. Every result is moved to the CPU before ``.tolist()`` or ``.numpy()``.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from typing import Iterator, Sequence

import numpy as np
import polars as pl
import torch
from tqdm.auto import tqdm

log = logging.getLogger(__name__)




def layer_chunks(n_layers: int, n_chunks: int) -> list[tuple[int, ...]]:
    """Split layers 0..n_layers-1 into `n_chunks` contiguous blocks (sizes differ by at most one)."""
    if not 1 <= n_chunks <= n_layers:
        raise ValueError(f"cannot split {n_layers} layers into {n_chunks} chunks")
    return [tuple(int(i) for i in block) for block in np.array_split(np.arange(n_layers), n_chunks)]


def chunk_label(chunk: Sequence[int]) -> str:
    """How a chunk is written in prompts and tables: '0-7'."""
    return f"{chunk[0]}-{chunk[-1]}" if len(chunk) > 1 else str(chunk[0])


@dataclasses.dataclass(frozen=True)
class PatchPrompt:
    """A model input and the character spans of its parts (in `text`)."""

    text: str  # exactly what the target reads (chat template applied)
    content: str  # the prompt x as shown to the explainer (no chat template)
    subject: tuple[int, int]
    relation: tuple[int, int]
    options: tuple[tuple[str, int, int], ...]  # (option, start, end)


def build_prompt(subject: str, template: str, options: Sequence[str], prompt_format: str,
                 tokenizer=None, chat: bool = False, prefix: str = "") -> PatchPrompt:
    """Assemble `prompt_format` ({statement}, {options} fields) around a fact, recording spans.

    `template` is the relation template with one ``{}`` for the subject ("{} is the capital of").
    Options are written joined by " or " (the paper: "Respond with one of France or Spain or ... or unknown").
    `prefix` (e.g. solved examples) is read by the target before the prompt but is not part of x as the
    explainer sees it (``content``): it is the same for every prompt and says nothing about this one.
    """
    head, tail = template.split("{}")
    pieces: list[tuple[str, str | None]] = []  # (text, span name)
    rest = prompt_format
    while rest:
        cut = min((i for i in (rest.find("{statement}"), rest.find("{options}")) if i >= 0), default=-1)
        if cut < 0:
            pieces.append((rest, None))
            break
        pieces.append((rest[:cut], None))
        if rest.startswith("{statement}", cut):
            pieces += [(head, None), (subject, "subject"), (tail, "relation")]
            rest = rest[cut + len("{statement}"):]
        else:
            for i, option in enumerate(options):
                pieces += [((" or " if i else ""), None), (option, f"option:{i}")]
            rest = rest[cut + len("{options}"):]
    content, spans, options_found = "", {}, []
    for text, name in pieces:
        start = len(content)
        content += text
        if name and name.startswith("option:"):
            options_found.append((text, start, len(content)))
        elif name:
            spans[name] = (start, len(content))
    if "subject" not in spans:
        raise ValueError(f"prompt format {prompt_format!r} has no {{statement}} field")
    offset = len(prefix)
    text = prefix + content
    if chat:
        from introspect.models.chat import render_chat

        text = render_chat(tokenizer, [{"role": "user", "content": prefix + content}])
        start = text.find(prefix + content)
        if start < 0:
            raise ValueError("the chat template altered the prompt text; cannot locate the spans")
        offset = start + len(prefix)
    shift = lambda span: (span[0] + offset, span[1] + offset)  # noqa: E731
    relation = spans["relation"] if tail.strip() else (spans["subject"][1], spans["subject"][1])
    return PatchPrompt(text, content, shift(spans["subject"]), shift(relation),
                       tuple((o, s + offset, e + offset) for o, s, e in options_found))


def _overlaps(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] < b[1] and b[0] < a[1] and a[1] > a[0]


def token_types(prompt: PatchPrompt, offsets: Sequence[tuple[int, int]], tokens: Sequence[str],
                orig_object: str, new_object: str) -> list[str]:
    """Appendix E.2 token types for each token of `prompt.text` (others are typed by their own text)."""
    types = [tok for tok in tokens]
    subject_tokens = [i for i, span in enumerate(offsets) if _overlaps(tuple(span), prompt.subject)]
    for i, span in enumerate(offsets):
        span = tuple(span)
        if _overlaps(span, prompt.relation) and i not in subject_tokens:
            types[i] = "relation"
        for option, start, end in prompt.options:
            if _overlaps(span, (start, end)):
                if option == orig_object:
                    types[i] = "orig answer option"
                elif option == new_object:
                    types[i] = "new answer option"
                else:
                    types[i] = "other answer option"
    if subject_tokens:
        types[subject_tokens[-1]] = "subject final"
    return types


@dataclasses.dataclass
class Intervention:
    """One patch: row `row` of the batch reads prompt `prompt`, gets `vector` at `position` in `layers`."""

    prompt: int
    position: int  # index into the prompt's full token ids
    layers: tuple[int, ...]
    vector: torch.Tensor  # (d,); kept on the CPU (float32 in sweeps), copied to the device with its forward pass


def common_prefix_length(sequences: Sequence[Sequence[int]]) -> int:
    """Length of the token prefix all sequences share."""
    first = sequences[0]
    n = min(len(s) for s in sequences)
    for i in range(n):
        if any(s[i] != first[i] for s in sequences[1:]):
            return i
    return n


class Patcher:
    """Batched activation patching on one target model, through nnsight."""

    def __init__(self, model, tokenizer):
        from nnsight import TransformersModel

        self.model = model.eval()
        self.tokenizer = tokenizer
        self.traced = TransformersModel(model, task="text-generation", tokenizer=tokenizer)
        self.n_layers = model.config.get_text_config().num_hidden_layers

    @torch.no_grad()
    def hidden_states(self, ids: Sequence[Sequence[int]], batch_size: int = 16,
                      starts: Sequence[int] | None = None) -> list[torch.Tensor]:
        """Output of every decoder layer (the residual stream, before any final norm) of each sequence.

        Each is (n_layers, len - start, d) for positions ``starts[i]`` (default 0) to the end, on the CPU, in
        the model's compute dtype (casting to float32 later gives exactly what a float32 copy would have).
        """
        return list(self.iter_hidden_states(ids, batch_size, starts))

    @torch.no_grad()
    def iter_hidden_states(self, ids: Sequence[Sequence[int]], batch_size: int = 16,
                           starts: Sequence[int] | None = None) -> Iterator[torch.Tensor]:
        """:meth:`hidden_states`, one sequence at a time: only one batch of states is held on the device."""
        starts = [0] * len(ids) if starts is None else list(starts)
        if len(starts) != len(ids):
            raise ValueError(f"{len(starts)} start positions for {len(ids)} sequences")
        for start in range(0, len(ids), batch_size):
            chunk = ids[start:start + batch_size]
            batch, mask = self._right_pad(chunk)
            saved = []
            with self.traced.trace({"input_ids": batch, "attention_mask": mask, "logits_to_keep": 1}):
                for layer in range(self.n_layers):
                    saved.append(self.traced.model.layers[layer].output.save())
            for i, seq in enumerate(chunk):
                first = starts[start + i]
                # slice on the device, then one copy to the host per sequence (no float32 copy on the GPU)
                yield torch.stack([h[i, first:len(seq)] for h in saved]).cpu()
            del saved

    @torch.no_grad()
    def next_tokens(self, ids: Sequence[Sequence[int]], batch_size: int = 16) -> list[int]:
        """Unpatched greedy next token of each sequence (their shared prefix runs once, from the KV cache)."""
        return self.patched_next_tokens(ids, [], batch_size=batch_size)[0]

    def _right_pad(self, seqs: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        from introspect.groundtruth.activations import pad_id, right_pad

        batch, mask = right_pad(seqs, pad_id(self.tokenizer))
        return batch.to(self.model.device), mask.to(self.model.device)

    @torch.no_grad()
    def patched_next_tokens(self, ids: Sequence[Sequence[int]], interventions: Sequence[Intervention],
                            batch_size: int = 64, prefix_len: int | None = None,
                            progress: bool = False, unpatched: bool = True) -> tuple[list[int], list[int]]:
        """Top-1 next token of every prompt unpatched, and of every intervention patched.

        Rows of one forward pass are interventions (any prompts, any positions, any chunks); the shared
        prefix of all prompts (`prefix_len`, default: computed) comes from one cached forward pass.
        """
        if prefix_len is None:
            prefix_len = common_prefix_length(ids)
        earliest = min((iv.position for iv in interventions), default=prefix_len)
        prefix_len, cache = self._prefix_cache(ids, min(prefix_len, earliest))
        rows: list[tuple[int, Intervention | None]] = [(p, None) for p in range(len(ids))] if unpatched else []
        n_plain = len(rows)
        rows += [(iv.prompt, iv) for iv in interventions]
        results: list[int] = []
        bar = tqdm(total=len(rows), desc="patching", unit="run", mininterval=10, disable=not progress)
        for start in range(0, len(rows), batch_size):
            group = rows[start:start + batch_size]
            results += self._run_group(ids, group, prefix_len, cache).argmax(dim=-1).cpu().tolist()
            bar.update(len(group))
        bar.close()
        return results[:n_plain], results[n_plain:]

    @torch.no_grad()
    def last_logits(self, ids: Sequence[Sequence[int]], batch_size: int = 64,
                    progress: bool = False) -> Iterator[torch.Tensor]:
        """Unpatched next-token logits (B, vocab) at the last token of each sequence, one batch at a time.

        The prefix all sequences share (a chat template's system turn) runs once, from the KV cache. The
        logits are float32 on the model's device: move what you keep to the CPU (``.cpu()``).
        """
        prefix_len, cache = self._prefix_cache(ids, common_prefix_length(ids))
        rows = [(p, None) for p in range(len(ids))]
        bar = tqdm(total=len(rows), desc="forward", unit="prompt", mininterval=10, disable=not progress)
        for start in range(0, len(rows), batch_size):
            group = rows[start:start + batch_size]
            yield self._run_group(ids, group, prefix_len, cache)
            bar.update(len(group))
        bar.close()

    def _prefix_cache(self, ids: Sequence[Sequence[int]], prefix_len: int):
        """(prefix length actually cached, KV cache of ids[0][:that]); every row keeps >= 1 token to run."""
        prefix_len = min(prefix_len, min(len(s) for s in ids) - 1)
        if prefix_len <= 0:
            return 0, None
        out = self.model(input_ids=torch.tensor([list(ids[0][:prefix_len])], device=self.model.device),
                         use_cache=True)
        return prefix_len, out.past_key_values

    @torch.no_grad()
    def _run_group(self, ids, group, prefix_len, cache) -> torch.Tensor:
        """Next-token logits (B, vocab, float32, on the model's device) at the last real token of each row,
        with the rows' patches applied. The patch vectors (kept on the CPU) go to the device once per call."""
        suffixes = [ids[p][prefix_len:] for p, _ in group]
        batch, mask = self._right_pad(suffixes)
        kwargs = {"input_ids": batch, "logits_to_keep": 1}
        if cache is not None:
            batch_cache = copy.deepcopy(cache)
            batch_cache.batch_repeat_interleave(len(group))
            prefix_mask = torch.ones((len(group), prefix_len), dtype=mask.dtype, device=mask.device)
            kwargs.update(attention_mask=torch.cat([prefix_mask, mask], dim=1), past_key_values=batch_cache,
                          use_cache=True)
        else:
            kwargs["attention_mask"] = mask
        device = batch.device
        patched = [iv for _, iv in group if iv is not None]
        # the group's patch vectors, in the model's dtype, moved to the device in one copy
        vectors = (torch.stack([iv.vector for iv in patched]).to(device, self.model.dtype) if patched else None)
        by_layer: dict[int, tuple[list[int], list[int], list[int]]] = {}
        slot = 0
        for row, (_, iv) in enumerate(group):
            if iv is None:
                continue
            for layer in iv.layers:
                rows_l, pos_l, slots_l = by_layer.setdefault(layer, ([], [], []))
                rows_l.append(row)
                pos_l.append(iv.position - prefix_len)
                slots_l.append(slot)
            slot += 1
        index = {layer: tuple(torch.tensor(v, device=device) for v in lists) for layer, lists in by_layer.items()}
        with self.traced.trace(kwargs):
            for layer in sorted(index):
                rows_t, pos_t, slots_t = index[layer]
                h = self.traced.model.layers[layer].output
                h[rows_t.to(h.device), pos_t.to(h.device)] = vectors[slots_t].to(h.device)
            final = self.traced.model.norm.output.save()
        last = mask.sum(dim=1) - 1
        return self.model.lm_head(final[torch.arange(len(group), device=last.device), last]).float()


@dataclasses.dataclass(frozen=True)
class SweepSettings:
    """How prompts are built and how the sweep is batched."""

    prompt_format: str  # fields {statement} and {options}
    chat: bool  # put the prompt through the target's chat template
    chunks: tuple[tuple[int, ...], ...]  # layer blocks; a patch writes v into every layer of its block
    batch_size: int = 64  # interventions per forward pass (bounds memory)
    unknown_option: str | None = "unknown"  # an extra last option, as in the paper's prompts
    prefix: str = ""  # read by the target before every prompt, not shown to the explainer
    require_correct: bool = True  # keep only pairs the target answers correctly (off for random test models)


def _answers(token: str, obj: str) -> bool:
    """A greedy next token answers `obj` when it is a non-empty prefix of it (case-insensitive)."""
    token = token.strip().lower()
    return bool(token) and obj.strip().lower().startswith(token)


@dataclasses.dataclass
class AnsweredPairs:
    """The unpatched run of every pair's x and x' (prompts interleaved: 2k is x of pair k, 2k + 1 its x')."""

    prompts: list[PatchPrompt]
    encodings: list  # the tokenizer's encodings (input_ids, offset_mapping)
    ids: list[list[int]]
    first: list[int]  # unpatched greedy next token of each prompt
    answered: list[tuple[bool, bool]]  # per pair: x answers its object, x' answers its object
    kept: list[int]  # the pairs the sweep patches
    stats: dict  # pairs, wrong_original, wrong_counterfactual, kept


def answer_pairs(pairs, patcher: Patcher, tokenizer, settings: SweepSettings) -> AnsweredPairs:
    """Build every pair's prompts and run them unpatched: which pairs the target answers on both sides.

    A pair is kept when x and x' are both answered (their greedy next token starts their own object), or
    always when ``settings.require_correct`` is off.
    """
    prompts, encodings = [], []
    for pair in pairs:
        options = tuple(pair.options) + ((settings.unknown_option,) if settings.unknown_option else ())
        for fact in (pair.original, pair.counterfactual):
            prompt = build_prompt(fact.subject, fact.template, options, settings.prompt_format,
                                  tokenizer, settings.chat, settings.prefix)
            enc = tokenizer(prompt.text, add_special_tokens=not settings.chat, return_offsets_mapping=True)
            prompts.append(prompt)
            encodings.append(enc)
    ids = [list(e.input_ids) for e in encodings]
    log.info("running %d prompts unpatched", len(ids))
    first = patcher.next_tokens(ids, batch_size=settings.batch_size)
    answered, kept = [], []
    stats = {"pairs": len(pairs), "wrong_original": 0, "wrong_counterfactual": 0}
    for k, pair in enumerate(pairs):
        ok_x = _answers(tokenizer.decode(first[2 * k]), pair.original.object)
        ok_cf = _answers(tokenizer.decode(first[2 * k + 1]), pair.counterfactual.object)
        answered.append((ok_x, ok_cf))
        stats["wrong_original"] += not ok_x
        stats["wrong_counterfactual"] += ok_x and not ok_cf
        if (ok_x and ok_cf) or not settings.require_correct:
            kept.append(k)
    stats["kept"] = len(kept)
    log.info("the target answers %d of %d pairs correctly on both sides", len(kept), len(pairs))
    return AnsweredPairs(prompts, encodings, ids, first, answered, kept, stats)


def patched_positions(x: Sequence[int], xc: Sequence[int]) -> list[tuple[int, int]]:
    """(position in x, aligned position in x') of every patch of a pair: from the first token where the two
    differ (earlier activations are identical, so a patch there changes nothing), aligned from the end."""
    shared = common_prefix_length([x, xc])
    delta = len(xc) - len(x)
    # the counterfactual's subject may be shorter: a position with no aligned one in x' is not patched
    return [(t, t + delta) for t in range(shared, len(x)) if t + delta >= shared]


def patch_sweep(pairs, model, tokenizer, settings: SweepSettings, progress: bool = True) -> tuple[dict, dict]:
    """Patch every (position, chunk) of every pair the target answers correctly.

    `pairs` are objects with ``original`` / ``counterfactual`` facts (``subject``, ``template``, ``object``)
    and the shared ``options``. Returns (columns of the sweep table, statistics about dropped pairs).
    """
    patcher = Patcher(model, tokenizer)
    n_layers = patcher.n_layers
    for chunk in settings.chunks:
        if max(chunk) >= n_layers:
            raise ValueError(f"layer chunk {list(chunk)} goes past the target's {n_layers} layers")
    run = answer_pairs(pairs, patcher, tokenizer, settings)
    prompts, encodings, ids, first, kept, stats = (run.prompts, run.encodings, run.ids, run.first, run.kept,
                                                   run.stats)
    if not kept:
        raise ValueError(
            "the target answered no pair correctly without patching; change patching.prompt_format "
            "(or chat) for this target, or use easier facts"
        )
    # Positions before the first token where x and x' differ are never patched, so the counterfactual states
    # are kept from there on only; they come to the CPU one batch at a time (see the module docstring).
    shared_of = {k: common_prefix_length([ids[2 * k], ids[2 * k + 1]]) for k in kept}
    cf_states = patcher.iter_hidden_states([ids[2 * k + 1] for k in kept], starts=[shared_of[k] for k in kept])
    interventions, meta = [], []
    skipped_prefix = 0
    for k, states in zip(kept, cf_states):
        x, xc = ids[2 * k], ids[2 * k + 1]
        shared = shared_of[k]
        skipped_prefix += shared
        tokens = [tokenizer.decode([t]) for t in x]
        types = token_types(prompts[2 * k], encodings[2 * k].offset_mapping, tokens,
                            pairs[k].original.object, pairs[k].counterfactual.object)
        for t, tc in patched_positions(x, xc):
            for c, chunk in enumerate(settings.chunks):
                # float32 mean of the chunk's layers (exact upcast of the compute dtype), on the CPU
                vector = states[list(chunk), tc - shared].float().mean(dim=0)
                interventions.append(Intervention(2 * k, t, chunk, vector))
                meta.append((k, t, tc, c, tokens[t], types[t]))
    stats["skipped_identical_positions"] = skipped_prefix
    log.info("%d interventions (%d pairs x positions x %d chunks)", len(interventions), len(kept),
             len(settings.chunks))
    _, patched = patcher.patched_next_tokens(ids, interventions, batch_size=settings.batch_size,
                                             progress=progress, unpatched=False)
    decode = lambda t: tokenizer.decode([t])  # noqa: E731
    columns: dict[str, list] = {name: [] for name in SWEEP_COLUMNS}
    for (k, t, tc, c, token, ttype), iv, new in zip(meta, interventions, patched):
        pair = pairs[k]
        orig = first[2 * k]
        columns["pair_id"].append(k)
        columns["relation_id"].append(pair.original.relation_id)
        columns["subject"].append(pair.original.subject)
        columns["counterfactual_subject"].append(pair.counterfactual.subject)
        columns["orig_object"].append(pair.original.object)
        columns["new_object"].append(pair.counterfactual.object)
        columns["prompt"].append(prompts[2 * k].content)
        columns["orig_pos"].append(t)
        columns["counterfact_pos"].append(tc)
        columns["token"].append(token)
        columns["token_type"].append(ttype)
        columns["chunk"].append(c)
        columns["layers"].append(list(settings.chunks[c]))
        columns["original_continuation"].append(decode(orig))
        columns["patched_continuation"].append(decode(new))
        columns["has_changed"].append(new != orig)
        columns["vector"].append(iv.vector.detach().cpu().float().numpy())
    return columns, stats


SWEEP_COLUMNS = (
    "pair_id", "relation_id", "subject", "counterfactual_subject", "orig_object", "new_object", "prompt",
    "orig_pos", "counterfact_pos", "token", "token_type", "chunk", "layers", "original_continuation",
    "patched_continuation", "has_changed", "vector",
)


def sweep_frame(columns: dict) -> "pl.DataFrame":
    """The sweep's columns as a table; vectors become a fixed-size float32 array column."""
    vectors = np.stack(columns["vector"]).astype(np.float32) if columns["vector"] else np.zeros((0, 0), np.float32)
    data = {k: v for k, v in columns.items() if k != "vector"}
    df = pl.DataFrame(data, schema_overrides={"pair_id": pl.Int64, "orig_pos": pl.Int64, "counterfact_pos": pl.Int64,
                                              "chunk": pl.Int64, "layers": pl.List(pl.Int64)})
    return df.with_columns(pl.Series("vector", vectors, dtype=pl.Array(pl.Float32, vectors.shape[1])))
