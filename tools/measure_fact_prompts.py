"""Greedy next-token accuracy of a target on the builtin facts under several prompt formats.

Used to choose the offline default's patching prompt (config.yaml; docs/results.md, Patching prompt format):

    .venv/bin/python -u tools/measure_fact_prompts.py resources/models/smollm2-135m \
        paper_chat,options_first_raw,fixed3_options_first_raw out.json

A fact counts as answered when the decoded greedy next token is a non-empty prefix of its object
(case-insensitive). Prints accuracy per relation for each format and writes them to the JSON file.
"""
import collections, json, random, sys, time
import torch
from introspect.sources.facts import builtin_facts, PAPER_PROMPT, format_prompt
from introspect.models.loading import load_model

model_dir = sys.argv[1]
formats_wanted = sys.argv[2].split(",") if len(sys.argv) > 2 else None
torch.set_num_threads(2)
model, tok, info = load_model(model_dir)
tok.padding_side = "left"
if tok.pad_token is None:
    tok.pad_token = tok.eos_token
facts = builtin_facts()
by_rel = collections.defaultdict(list)
for f in facts:
    by_rel[f.relation_id].append(f)
rng = random.Random(0)
fw = lambda o: o.split()[0].lower()

def options_for(f):
    words = {}
    for g in by_rel[f.relation_id]:
        words.setdefault(fw(g.object), g.object)
    others = [o for w, o in words.items() if w != fw(f.object)]
    opts = [f.object] + rng.sample(others, 4)
    rng.shuffle(opts)
    return opts

OPTS = {f: options_for(f) for f in facts}
SHOTS = {}
for f in facts:
    pool = [g for g in by_rel[f.relation_id] if g.object != f.object and g.subject != f.subject]
    SHOTS[f] = rng.sample(pool, 3)

def chat(messages):
    return tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False), False

OPTIONS_FIRST = "Respond with one of {options} or unknown and nothing else.\n{prompt}"
FIXED = [  # a fixed prefix shared by every prompt (facts not in the table)
    ("The Great Wall is located in the country of", ["India", "China", "Peru", "Italy", "Kenya"], "China"),
    ("Cats are a type of", ["bird", "fish", "mammal", "insect", "reptile"], "mammal"),
    ("Lisbon is a city in the country of", ["Portugal", "Spain", "Brazil", "France", "Japan"], "Portugal"),
]
def paper_answer_block(prompt, opts, answer=None):
    text = PAPER_PROMPT.format(prompt=prompt, options=" or ".join(opts)) + "\nAnswer:"
    return text + (f" {answer}\n\n" if answer is not None else "")

FORMATS = {
    "statement_raw": lambda f: (f.prompt, True),
    "paper_raw": lambda f: (format_prompt(f, OPTS[f]), True),
    "paper_chat": lambda f: chat([{"role": "user", "content": format_prompt(f, OPTS[f])}]),
    "options_first_raw": lambda f: (format_prompt(f, OPTS[f], OPTIONS_FIRST), True),
    "options_first_chat": lambda f: chat([{"role": "user", "content": format_prompt(f, OPTS[f], OPTIONS_FIRST)}]),
    "paper_answer_raw": lambda f: (paper_answer_block(f.prompt, OPTS[f]), True),
    "fewshot3_statement_raw": lambda f: ("".join(f"{e.prompt} {e.object}.\n" for e in SHOTS[f]) + f.prompt, True),
    "fewshot3_options_first_raw": lambda f: (
        "".join(format_prompt(e, OPTS[e], OPTIONS_FIRST) + f" {e.object}\n\n" for e in SHOTS[f])
        + format_prompt(f, OPTS[f], OPTIONS_FIRST), True),
    "fewshot3_paper_answer_raw": lambda f: (
        "".join(paper_answer_block(e.prompt, OPTS[e], e.object) for e in SHOTS[f])
        + paper_answer_block(f.prompt, OPTS[f]), True),
    "fewshot3_paper_chat": lambda f: chat(
        [m for e in SHOTS[f] for m in ({"role": "user", "content": format_prompt(e, OPTS[e])},
                                       {"role": "assistant", "content": e.object})]
        + [{"role": "user", "content": format_prompt(f, OPTS[f])}]),
    "fixed3_paper_answer_raw": lambda f: (
        "".join(paper_answer_block(p, o, a) for p, o, a in FIXED) + paper_answer_block(f.prompt, OPTS[f]), True),
    "fixed3_options_first_raw": lambda f: (
        "".join(OPTIONS_FIRST.format(prompt=p, options=" or ".join(o)) + f" {a}\n\n" for p, o, a in FIXED)
        + format_prompt(f, OPTS[f], OPTIONS_FIRST), True),
}

@torch.no_grad()
def next_tokens(items, batch=16):
    encoded = [tok(text, add_special_tokens=special)["input_ids"] for text, special in items]
    order = sorted(range(len(items)), key=lambda k: len(encoded[k]))
    out = [None] * len(items)
    for i in range(0, len(items), batch):
        rows = order[i:i + batch]
        enc_ids = [encoded[k] for k in rows]
        chunk = rows
        width = max(map(len, enc_ids))
        ids = torch.full((len(chunk), width), tok.pad_token_id)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for r, seq in enumerate(enc_ids):
            ids[r, width - len(seq):] = torch.tensor(seq)
            mask[r, width - len(seq):] = 1
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        hidden = model.model(input_ids=ids, attention_mask=mask, position_ids=pos).last_hidden_state[:, -1]
        logits = model.lm_head(hidden)
        for k, t in zip(rows, logits.argmax(-1).tolist()):
            out[k] = tok.decode([t])
    return out

answers = lambda token, obj: bool(token.strip()) and obj.strip().lower().startswith(token.strip().lower())
results = {}
relations = list(by_rel)
for name, build in FORMATS.items():
    if formats_wanted and name not in formats_wanted:
        continue
    t = time.time()
    items = [build(f) for f in facts]
    print(name, "tokens", sum(len(tok(x)["input_ids"]) for x, _ in items), flush=True)
    toks = next_tokens(items)
    correct = collections.Counter(); in_opts = collections.Counter()
    for f, token in zip(facts, toks):
        correct[f.relation_id] += answers(token, f.object)
        in_opts[f.relation_id] += any(answers(token, o) for o in OPTS[f] + ["unknown"])
    common = collections.Counter(t.strip() or repr(t) for t in toks).most_common(4)
    results[name] = {r: correct[r] / len(by_rel[r]) for r in relations}
    results[name]["ALL"] = sum(correct.values()) / len(facts)
    results[name]["in_options"] = sum(in_opts.values()) / len(facts)
    print(f"{name:30s} acc={results[name]['ALL']:.3f} in_options={results[name]['in_options']:.3f} "
          f"({time.time()-t:.0f}s) common={common}", flush=True)
    print("   e.g.", repr(items[0][0][-160:]), "->", repr(toks[0]), flush=True)
cols = list(results)
print("\nrelation".ljust(22) + "".join(c[:14].rjust(15) for c in cols))
for r in relations + ["ALL", "in_options"]:
    print(r.ljust(22) + "".join(f"{results[c][r]:15.2f}" for c in cols))
json.dump(results, open(sys.argv[3], "w"), indent=1)
