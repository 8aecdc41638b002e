"""Activation patching: prompts and spans, token types, the batched nnsight patch against a hand-written hook."""

from __future__ import annotations

import collections
from types import SimpleNamespace

import polars as pl
import pytest
import torch
import transformers
import yaml
from conftest import REPO, synthetic_sweep, tiny_llama

from introspect.groundtruth.patching import (
    Intervention,
    Patcher,
    SweepSettings,
    build_prompt,
    common_prefix_length,
    layer_chunks,
    patch_sweep,
    patched_positions,
    sweep_frame,
    token_types,
)
from introspect.models.loading import load_model
from introspect.schemas import TOKEN_TYPES, SchemaError, check_schema
from introspect.sources.facts import builtin_facts, make_pairs

FORMAT = "{statement}\nRespond with one of {options} and nothing else."
OPTIONS = ("France", "Spain", "Italy", "United Kingdom", "Egypt", "unknown")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, smollm2_tokenizer_dir):
    out = tiny_llama(tmp_path_factory.mktemp("patching") / "tiny", smollm2_tokenizer_dir, n_layers=4, seed=3)
    return load_model(out)


def test_layer_chunks_are_contiguous_and_cover_every_layer():
    assert layer_chunks(30, 4) == [tuple(range(0, 8)), tuple(range(8, 16)), tuple(range(16, 23)), tuple(range(23, 30))]
    assert layer_chunks(32, 4)[1] == tuple(range(8, 16))
    with pytest.raises(ValueError):
        layer_chunks(3, 4)


def test_prompt_spans_and_token_types_on_a_known_prompt(smollm2_tokenizer_dir):
    tok = transformers.AutoTokenizer.from_pretrained(smollm2_tokenizer_dir)
    prompt = build_prompt("Rome", "{} is the capital of", OPTIONS, FORMAT, tok, chat=True)
    assert prompt.content == ("Rome is the capital of\nRespond with one of France or Spain or Italy or "
                              "United Kingdom or Egypt or unknown and nothing else.")
    assert prompt.text[slice(*prompt.subject)] == "Rome"
    assert prompt.text[slice(*prompt.relation)] == " is the capital of"
    enc = tok(prompt.text, add_special_tokens=False, return_offsets_mapping=True)
    tokens = [tok.decode([t]) for t in enc.input_ids]
    types = token_types(prompt, enc.offset_mapping, tokens, orig_object="Italy", new_object="France")
    typed = {(tokens[i], types[i]) for i in range(len(tokens))}
    assert ("Rome", "subject final") in typed
    assert {(" is", "relation"), (" the", "relation"), (" capital", "relation"), (" of", "relation")} <= typed
    assert (" Italy", "orig answer option") in typed and (" France", "new answer option") in typed
    assert {(" Spain", "other answer option"), (" Egypt", "other answer option"),
            (" unknown", "other answer option"), (" United", "other answer option"),
            (" Kingdom", "other answer option")} <= typed
    assert (" or", " or") in typed and ("Respond", "Respond") in typed or ("Resp", "Resp") in typed
    assert types.count("subject final") == 1


def test_multi_token_subject_marks_only_its_last_token(smollm2_tokenizer_dir):
    tok = transformers.AutoTokenizer.from_pretrained(smollm2_tokenizer_dir)
    prompt = build_prompt("Buenos Aires", "{} is the capital of", OPTIONS, FORMAT, tok, chat=False)
    enc = tok(prompt.text, return_offsets_mapping=True)
    tokens = [tok.decode([t]) for t in enc.input_ids]
    types = token_types(prompt, enc.offset_mapping, tokens, "Argentina", "France")
    final = types.index("subject final")
    assert tokens[final].strip() == "Aires" and final > 0
    assert "".join(tokens[:final + 1]) == "Buenos Aires"
    assert types[:final] == tokens[:final]  # non-final subject tokens are their own types


@pytest.mark.parametrize("config_file, target, tokenizer", [
    ("config.yaml", "smollm2-135m", "smollm2_tokenizer_dir"),
    ("config.yaml", "gemma3-270m", "gemma3_tokenizer_dir"),
    ("configs/smoke.yaml", "tiny-smollm2", "smollm2_tokenizer_dir"),
    ("configs/smoke.yaml", "tiny-gemma3", "gemma3_tokenizer_dir"),
])
def test_shipped_prompts_patch_every_appendix_e2_token_type(config_file, target, tokenizer, request):
    """The positions a sweep patches (from the first token where x and x' differ) include all five token
    types, answer options too: a format that lists the options before the statement never patches them."""
    config = yaml.safe_load((REPO / config_file).read_text())
    section = config["patching"]
    entry = section["targets"][target]
    tok = transformers.AutoTokenizer.from_pretrained(request.getfixturevalue(tokenizer))
    pairs = make_pairs(builtin_facts(), 20, seed=config["seed"], n_options=section["n_options"])
    unknown = section.get("unknown_option", "unknown")
    seen = collections.Counter()
    for pair in pairs:
        options = tuple(pair.options) + ((unknown,) if unknown else ())
        prompts = [build_prompt(f.subject, f.template, options, entry["prompt_format"], tok, entry["chat"],
                                entry.get("prefix", "")) for f in (pair.original, pair.counterfactual)]
        encs = [tok(p.text, add_special_tokens=not entry["chat"], return_offsets_mapping=True) for p in prompts]
        x, xc = (list(e.input_ids) for e in encs)
        tokens = [tok.decode([t]) for t in x]
        types = token_types(prompts[0], encs[0].offset_mapping, tokens, pair.original.object,
                            pair.counterfactual.object)
        seen.update(types[t] for t, _ in patched_positions(x, xc))
    assert set(TOKEN_TYPES) <= set(seen), seen


def test_patched_positions_start_where_the_pair_differs_and_align_from_the_end():
    x = [1, 2, 3, 4, 5, 6]  # a two-token subject 3 4
    xc = [1, 2, 9, 5, 6]  # a one-token subject 9
    assert patched_positions(x, xc) == [(3, 2), (4, 3), (5, 4)]  # position 2 (first subject token) has no partner
    assert patched_positions(xc, x) == [(2, 3), (3, 4), (4, 5)]


def hook_patch_logits(model, ids, position, layers, vector):
    """Reference: the same patch with plain forward hooks, one sequence at a time."""
    def hook(module, args, output):
        out = output.clone()
        out[0, position] = vector
        return out

    handles = [model.model.layers[layer].register_forward_hook(hook) for layer in layers]
    try:
        with torch.no_grad():
            return model(torch.tensor([ids])).logits[0, -1]
    finally:
        for h in handles:
            h.remove()


@pytest.mark.parametrize("prefix", [None, 0])
def test_batched_nnsight_patch_equals_forward_hook(tiny, prefix):
    model, tok, _ = tiny
    texts = [tok.apply_chat_template([{"role": "user", "content": c}], tokenize=False, add_generation_prompt=True)
             for c in ("Rome is the capital of", "Paris is the capital of France, and Madrid of")]
    ids = [tok(t, add_special_tokens=False).input_ids for t in texts]
    g = torch.Generator().manual_seed(0)
    ivs = [Intervention(0, len(ids[0]) - 3, (0, 1), 3 * torch.randn(64, generator=g)),
           Intervention(1, 30, (2, 3), 3 * torch.randn(64, generator=g)),
           Intervention(1, len(ids[1]) - 1, (1,), 3 * torch.randn(64, generator=g)),
           Intervention(0, 29, (3,), 3 * torch.randn(64, generator=g))]
    patcher = Patcher(model, tok)
    shared = common_prefix_length(ids)
    assert shared > 20  # the system turn of SmolLM2's template
    group = [(iv.prompt, iv) for iv in ivs] + [(0, None)]
    start = shared if prefix is None else 0
    cache = None
    if start:
        with torch.no_grad():
            cache = model(input_ids=torch.tensor([ids[0][:start]]), use_cache=True).past_key_values
    logits = patcher._run_group(ids, group, start, cache)
    for row, iv in enumerate(ivs):
        expected = hook_patch_logits(model, ids[iv.prompt], iv.position, iv.layers, iv.vector)
        assert torch.allclose(logits[row], expected, atol=1e-4), row
    with torch.no_grad():
        plain = model(torch.tensor([ids[0]])).logits[0, -1]
    assert torch.allclose(logits[-1], plain, atol=1e-4)


def fact(subject, obj):
    return SimpleNamespace(subject=subject, template="{} is the capital of", object=obj, relation_id="P36")


def test_sweep_aligns_positions_of_subjects_of_different_lengths(tiny):
    model, tok, _ = tiny
    pairs = [SimpleNamespace(original=fact("Buenos Aires", "Argentina"), counterfactual=fact("Rome", "Italy"),
                             options=("Argentina", "Italy", "Spain", "Egypt", "France"))]
    settings = SweepSettings(FORMAT, chat=True, chunks=tuple(layer_chunks(4, 2)), batch_size=7,
                             require_correct=False)
    columns, stats = patch_sweep(pairs, model, tok, settings, progress=False)
    df = sweep_frame(columns)
    x_len = len(tok(build_prompt("Buenos Aires", "{} is the capital of", pairs[0].options + ("unknown",), FORMAT,
                                 tok, True).text, add_special_tokens=False).input_ids)
    delta = df["counterfact_pos"] - df["orig_pos"]
    assert delta.n_unique() == 1 and delta[0] < 0  # one shift: x' has the shorter subject
    assert df["orig_pos"].max() == x_len - 1
    assert df.filter(pl.col("token_type") == "subject final")["token"].unique().to_list() == [" Aires"]
    assert df["vector"].dtype == pl.Array(pl.Float32, 64)
    assert stats["kept"] == 1 and df.height == 2 * df["orig_pos"].n_unique()
    # the same interventions one at a time give the same outcomes
    settings1 = SweepSettings(FORMAT, chat=True, chunks=settings.chunks, batch_size=1, require_correct=False)
    again, _ = patch_sweep(pairs, model, tok, settings1, progress=False)
    assert again["patched_continuation"] == columns["patched_continuation"]
    # the whole table, vectors included: the batch size is a speed setting (the workflow passes it as a
    # resource, so editing it re-runs nothing)
    assert sweep_frame(again).equals(df)


def test_chunk_past_the_depth_is_refused(tiny):
    model, tok, _ = tiny
    pairs = [SimpleNamespace(original=fact("Rome", "Italy"), counterfactual=fact("Paris", "France"),
                             options=("Italy", "France", "Spain", "Egypt", "Peru"))]
    with pytest.raises(ValueError, match=r"layer chunk \[3, 4\] goes past the target's 4 layers"):
        patch_sweep(pairs, model, tok, SweepSettings(FORMAT, False, ((0, 1, 2), (3, 4))), progress=False)


def test_schema_check_names_the_bad_columns():
    df = synthetic_sweep(2).drop("token_type").with_columns(pl.col("chunk").cast(pl.String))
    with pytest.raises(SchemaError, match="missing column 'token_type'.*column 'chunk' is String, expected Int64"):
        check_schema(df, "patching_sweep")


@pytest.mark.parametrize("chat", [False, True])
def test_prefix_is_read_by_the_target_but_not_shown_to_the_explainer(smollm2_tokenizer_dir, chat):
    tok = transformers.AutoTokenizer.from_pretrained(smollm2_tokenizer_dir)
    prefix = "Cats are a type of mammal\n\n"
    prompt = build_prompt("Rome", "{} is the capital of", OPTIONS, FORMAT, tok, chat=chat, prefix=prefix)
    plain = build_prompt("Rome", "{} is the capital of", OPTIONS, FORMAT, tok, chat=chat)
    assert prompt.content == plain.content and prefix not in prompt.content
    assert prefix + plain.content in prompt.text
    assert prompt.text[slice(*prompt.subject)] == "Rome"
    assert prompt.text[slice(*prompt.relation)] == " is the capital of"
    assert [prompt.text[s:e] for _, s, e in prompt.options] == list(OPTIONS)


def test_unpatched_next_tokens_with_the_cached_prefix_equal_plain_forwards(tiny):
    model, tok, _ = tiny
    texts = ["Shared solved examples.\nRome is the capital of", "Shared solved examples.\nCairo is a city in"]
    ids = [tok(t).input_ids for t in texts]
    with torch.no_grad():
        plain = [int(model(torch.tensor([s])).logits[0, -1].argmax()) for s in ids]
    assert Patcher(model, tok).next_tokens(ids) == plain
