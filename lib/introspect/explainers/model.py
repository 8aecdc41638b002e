"""Explainer models that read a vector as a continuous token (paper equations 1, 3, 6, 8;.

The prompt holds three tokens ``[s] [v] [e]`` added to the explainer's vocabulary. After the embedding
lookup, the embedding at ``[v]`` is replaced by ``Pi_l v``: a per-target-layer linear map from the target's
hidden size to the explainer's (identity when the sizes match and no projection is configured). The loss is
the cross-entropy of the explanation tokens only; each example weighs the same, whatever its length.

One code path serves all three tasks (feature descriptions, activation patching, input ablation); a task
with no vector (input ablation) simply has no ``{vector}`` in its prompt.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any, Sequence

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from introspect.models.chat import render_chat

log = logging.getLogger(__name__)


VECTOR_TOKENS = ("<|vec_start|>", "<|vec|>", "<|vec_end|>")


VECTOR_SLOT = "{vector}"  # where a prompt template puts [s] v [e]


PROJECTIONS = ("none", "random", "pretrained")


TUNINGS = ("full", "lora")


CONFIG_FILE = "explainer.json"


PROJECTION_FILE = "projections.safetensors"


IGNORE = -100


@dataclasses.dataclass(frozen=True)
class ExplainerSettings:
    """How an explainer is built around a causal LM."""

    target_hidden: int | None  # hidden size of the target's vectors; None for tasks with no vector
    layers: tuple[int, ...] = ()  # target layers that have a projection (one Pi_l each)
    projection: str = "none"  # none | random | pretrained
    tuning: str = "full"  # full | lora
    chat: bool = False  # wrap prompts in the explainer's chat template
    lora_r: int = 16
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    train_embeddings: bool = True  # full tuning: also train the input/output embedding matrices
    # Rescale Pi_l v to this L2 norm before it is written over [v]: None keeps Pi_l v as it is (the authors' code);
    # "embedding" is resolved by build_explainer to the mean norm of the explainer's input-embedding rows.
    vector_norm: float | str | None = None
    # How Pi_l is trained: lora = a low-rank update of a frozen Pi_l (the paper's footnote 6 for LoRA runs),
    # full = every entry; auto = lora under LoRA tuning, full under full tuning.
    projection_tuning: str = "auto"

    def __post_init__(self):
        if self.projection not in PROJECTIONS:
            raise ValueError(f"projection must be one of {PROJECTIONS}, got {self.projection!r}")
        if self.tuning not in TUNINGS:
            raise ValueError(f"tuning must be one of {TUNINGS}, got {self.tuning!r}")
        if self.projection_tuning not in ("auto", *TUNINGS):
            raise ValueError(f"projection_tuning must be auto, full or lora, got {self.projection_tuning!r}")
        object.__setattr__(self, "layers", tuple(int(layer) for layer in self.layers))
        if isinstance(self.vector_norm, str) and self.vector_norm != "embedding":
            raise ValueError(f"vector_norm must be a number, 'embedding' or None, got {self.vector_norm!r}")
        if isinstance(self.vector_norm, (int, float)) and not self.vector_norm > 0:
            raise ValueError(f"vector_norm must be positive, got {self.vector_norm}")


def resolve_projection(projection: str, target_hidden: int, explainer_hidden: int) -> str:
    """A configured projection: auto = none when the hidden sizes match, else a random Pi_l (the paper's)."""
    if projection != "auto":
        return projection
    return "none" if target_hidden == explainer_hidden else "random"


class LowRankLinear(nn.Module):
    """A bias-free linear map trained through a low-rank update: ``W = W0 + (alpha / r) B A`` with W0 frozen,
    A (r x in) initialised as PEFT does and B (out x r) at zero, so training starts from W0 (paper footnote 6:
    under LoRA, Pi_l is among the parameters trained by low-rank updates)."""

    def __init__(self, base: nn.Linear, r: int, alpha: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(base.weight.detach().clone(), requires_grad=False)
        out_features, in_features = self.weight.shape
        # the update in float32 whatever the model's dtype (as PEFT keeps its adapters): small steps survive bf16
        self.lora_A = nn.Parameter(torch.empty(r, in_features, dtype=torch.float32))
        nn.init.kaiming_uniform_(self.lora_A, a=5 ** 0.5)
        self.lora_B = nn.Parameter(torch.zeros(out_features, r, dtype=torch.float32))
        self.scale = alpha / r

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        update = (x.to(self.lora_A.dtype) @ self.lora_A.T) @ self.lora_B.T
        return nn.functional.linear(x, self.weight) + (self.scale * update).to(x.dtype)

    @staticmethod
    def merge(weight: torch.Tensor, lora_a: torch.Tensor, lora_b: torch.Tensor, scale: float) -> torch.Tensor:
        return weight + scale * (lora_b.float() @ lora_a.float()).to(weight.dtype)

    def merged_weight(self) -> torch.Tensor:
        return self.merge(self.weight, self.lora_A, self.lora_B, self.scale)


@dataclasses.dataclass
class Encoded:
    """One tokenised example: ids, labels (-100 outside the explanation) and the [v] position (-1: none)."""

    input_ids: list[int]
    labels: list[int]
    vector_pos: int


def add_vector_tokens(tokenizer) -> list[int]:
    """Add ``[s] [v] [e]`` to the tokenizer (idempotent) and return their ids."""
    missing = [t for t in VECTOR_TOKENS if t not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_special_tokens({"additional_special_tokens": missing}, replace_extra_special_tokens=False)
    return tokenizer.convert_tokens_to_ids(list(VECTOR_TOKENS))


def render_prompt(tokenizer, prompt: str, chat: bool, system: str | None = None) -> str:
    """The prompt text with [s][v][e] in place of ``{vector}``, inside the chat template when `chat`.

    A `system` message goes through the chat template's system role, or above the prompt without one.
    """
    if prompt.count(VECTOR_SLOT) > 1:
        raise ValueError(f"a prompt may hold at most one {VECTOR_SLOT}: {prompt!r}")
    text = prompt.replace(VECTOR_SLOT, "".join(VECTOR_TOKENS))
    if chat:
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": text}]
        text = render_chat(tokenizer, messages)
    elif system:
        text = f"{system}\n\n{text}"
    return text


def encode(tokenizer, prompt: str, explanation: str | None, chat: bool = False, system: str | None = None) -> Encoded:
    """Tokenise a (prompt, explanation) pair; the explanation is what the loss is computed on."""
    return encode_answer(tokenizer, encode_prompt(tokenizer, prompt, chat, system), explanation, chat)


@dataclasses.dataclass(frozen=True)
class EncodedPrompt:
    """A tokenised prompt: its rendered text, ids and the [v] position (-1: none)."""

    text: str
    input_ids: tuple[int, ...]
    vector_pos: int


def encode_prompt(tokenizer, prompt: str, chat: bool = False, system: str | None = None) -> EncodedPrompt:
    """The prompt half of :func:`encode` (the same for every example that asks the same question)."""
    text = render_prompt(tokenizer, prompt, chat, system)
    # A chat template writes its own BOS; otherwise let the tokenizer add what it normally adds.
    prompt_ids = tokenizer(text, add_special_tokens=not chat).input_ids
    vec_id = tokenizer.convert_tokens_to_ids(VECTOR_TOKENS[1])
    positions = [i for i, t in enumerate(prompt_ids) if t == vec_id]
    if len(positions) > 1:
        raise ValueError(f"the prompt tokenises to {len(positions)} vector placeholders; expected at most one")
    return EncodedPrompt(text, tuple(prompt_ids), positions[0] if positions else -1)


def encode_answer(tokenizer, prompt: EncodedPrompt, explanation: str | None, chat: bool = False) -> Encoded:
    """An encoded prompt followed by the explanation's tokens and EOS (the loss is on those only)."""
    ids = list(prompt.input_ids)
    labels = [IGNORE] * len(ids)
    if explanation is not None:
        sep = "" if chat or prompt.text.endswith((" ", "\n")) else " "
        target = tokenizer(sep + explanation, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
        ids += target
        labels += target
    return Encoded(ids, labels, prompt.vector_pos)


@dataclasses.dataclass
class Batch:
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    vector_pos: torch.Tensor  # (B,), -1 where an example has no vector
    vectors: torch.Tensor | None  # (B, d_target)
    layers: torch.Tensor | None  # (B,)

    def to(self, device) -> "Batch":
        move = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return Batch(**{k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in move.items()})


def collate(items: Sequence[Encoded], pad_id: int, vectors: torch.Tensor | None = None,
            layers: Sequence[int] | None = None, left_pad: bool = False) -> Batch:
    """Pad a list of encoded examples (right for training, left for generation)."""
    width = max(len(e.input_ids) for e in items)
    ids = torch.full((len(items), width), pad_id, dtype=torch.long)
    labels = torch.full((len(items), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    pos = torch.full((len(items),), -1, dtype=torch.long)
    for i, e in enumerate(items):
        n = len(e.input_ids)
        start = width - n if left_pad else 0
        ids[i, start:start + n] = torch.tensor(e.input_ids)
        labels[i, start:start + n] = torch.tensor(e.labels)
        mask[i, start:start + n] = 1
        if e.vector_pos >= 0:
            pos[i] = start + e.vector_pos
    layer_t = torch.tensor(list(layers), dtype=torch.long) if layers is not None else None
    return Batch(ids, mask, labels, pos, vectors, layer_t)


class VectorExplainer(nn.Module):
    """A causal LM plus per-layer projections Pi_l that writes vectors over the [v] embedding."""

    def __init__(self, lm, tokenizer, settings: ExplainerSettings,
                 projection_weights: dict[int, torch.Tensor] | None = None):
        super().__init__()
        self.settings = settings
        self.tokenizer = tokenizer
        add_vector_tokens(tokenizer)
        grow_embeddings(lm, len(tokenizer))
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.hidden = lm.config.get_text_config().hidden_size
        self.projections = nn.ModuleDict()
        if settings.target_hidden is not None:
            if settings.projection == "none" and settings.target_hidden != self.hidden:
                raise ValueError(
                    f"the target's vectors have {settings.target_hidden} dimensions but the explainer's "
                    f"hidden size is {self.hidden}: configure projection: random or pretrained"
                )
            if settings.projection != "none":
                for layer in settings.layers:
                    proj = nn.Linear(settings.target_hidden, self.hidden, bias=False)
                    if projection_weights is not None:
                        proj.weight.data.copy_(projection_weights[layer])
                    proj = proj.to(lm.dtype)
                    if settings.projection_tuning == "lora" or (settings.projection_tuning == "auto"
                                                                and settings.tuning == "lora"):
                        proj = LowRankLinear(proj, settings.lora_r, settings.lora_alpha)
                    self.projections[str(layer)] = proj
        if settings.tuning == "full" and not settings.train_embeddings:
            # Gemma-3's 262k x 640 embedding is most of its parameters: freezing it halves a CPU step
            for module in (lm.get_input_embeddings(), lm.get_output_embeddings()):
                module.weight.requires_grad_(False)
        if settings.tuning == "lora":
            import peft

            lm = peft.get_peft_model(lm, peft.LoraConfig(
                r=settings.lora_r, lora_alpha=settings.lora_alpha, lora_dropout=settings.lora_dropout,
                target_modules="all-linear", task_type="CAUSAL_LM"))
        self.lm = lm

    @property
    def device(self) -> torch.device:
        return self.lm.get_input_embeddings().weight.device

    def project(self, vectors: torch.Tensor, layers: torch.Tensor) -> torch.Tensor:
        """Pi_l v for each (v, l) pair (identity when no projection is configured), rescaled to
        ``settings.vector_norm`` when one is set."""
        vectors = vectors.to(self.device, self.lm.get_input_embeddings().weight.dtype)
        if not self.projections:
            out = vectors
        else:
            out = torch.empty(vectors.shape[0], self.hidden, dtype=vectors.dtype, device=vectors.device)
            unknown = sorted(set(layers.tolist()) - {int(k) for k in self.projections})
            if unknown:
                raise KeyError(f"no projection for target layer {unknown[0]}; the explainer has {list(self.projections)}")
            # every projection runs, on its rows or on none: ZeRO-3 needs the same modules in the same order on
            # every rank, whichever layers a rank's micro-batch holds
            for key, projection in self.projections.items():
                rows = (layers == int(key)).nonzero(as_tuple=True)[0]
                out = out.index_copy(0, rows, projection(vectors[rows]))
        norm = self.settings.vector_norm
        if norm is not None:
            if isinstance(norm, str):
                raise ValueError("vector_norm 'embedding' must be resolved by build_explainer before use")
            out = out * (norm / out.norm(dim=-1, keepdim=True).clamp_min(1e-12))
        return out

    def embed(self, batch: Batch) -> torch.Tensor:
        """Input embeddings with Pi_l v written over the [v] position of each example that has one."""
        embeds = self.lm.get_input_embeddings()(batch.input_ids)
        has = (batch.vector_pos >= 0).nonzero(as_tuple=True)[0]
        if len(has) == 0:
            return embeds
        if batch.vectors is None:
            raise ValueError("the batch has [v] placeholders but no vectors")
        projected = self.project(batch.vectors[has], batch.layers[has]).to(embeds.dtype)
        return embeds.index_put((has, batch.vector_pos[has]), projected)

    def forward(self, batch: Batch) -> torch.Tensor:
        """Mean over examples of each example's mean cross-entropy on its explanation tokens."""
        keep = learned_positions(batch.labels)
        logits = self.lm(inputs_embeds=self.embed(batch), attention_mask=batch.attention_mask,
                         logits_to_keep=keep).logits
        return explanation_loss(logits, batch.labels[:, keep + 1], shifted=True)

    @torch.no_grad()
    def generate(self, batch: Batch, max_new_tokens: int = 40) -> list[str]:
        """Greedy continuations of a left-padded batch, decoded without special tokens."""
        out = self.lm.generate(
            inputs_embeds=self.embed(batch), attention_mask=batch.attention_mask, do_sample=False,
            max_new_tokens=max_new_tokens, pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=self.tokenizer.eos_token_id,
        )
        return [t.strip() for t in self.tokenizer.batch_decode(out, skip_special_tokens=True)]

    # ------------------------------------------------------------------ checkpoints
    def save(self, out_dir: str | Path, metadata: dict[str, Any] | None = None,
             state_dict: dict[str, torch.Tensor] | None = None) -> Path:
        """An HF folder (full weights, or a LoRA adapter + the base path) + projections + explainer.json.

        `state_dict`: the explainer's weights when the modules do not hold them (ZeRO-3 partitions them over
        the ranks; :func:`introspect.explainers.training.gathered_state_dict` collects them on rank 0)."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        lm_state = None
        if state_dict is not None:
            lm_state = {k[len("lm."):]: t for k, t in state_dict.items() if k.startswith("lm.")}
        self.lm.save_pretrained(out_dir / "lm", state_dict=lm_state)
        self.tokenizer.save_pretrained(out_dir / "lm")
        adapter = out_dir / "lm" / "adapter_config.json"
        if adapter.exists():  # PEFT writes target_modules in set order, which changes between processes
            fields = json.loads(adapter.read_text())
            if isinstance(fields.get("target_modules"), list):
                fields["target_modules"] = sorted(fields["target_modules"])
                adapter.write_text(json.dumps(fields, indent=2, sort_keys=True))
        if self.projections:
            weights = {}
            for k, p in self.projections.items():  # a low-rank-trained Pi_l is saved merged: a plain matrix
                if state_dict is None:
                    weights[k] = p.merged_weight() if isinstance(p, LowRankLinear) else p.weight
                elif isinstance(p, LowRankLinear):
                    weights[k] = LowRankLinear.merge(state_dict[f"projections.{k}.weight"],
                                                     state_dict[f"projections.{k}.lora_A"],
                                                     state_dict[f"projections.{k}.lora_B"], p.scale)
                else:
                    weights[k] = state_dict[f"projections.{k}.weight"]
            save_file({k: w.detach().float().cpu().contiguous() for k, w in weights.items()}, out_dir / PROJECTION_FILE)
        config = {"settings": dataclasses.asdict(self.settings), "metadata": metadata or {}}
        if self.settings.tuning == "lora":
            config["base_model"] = str(self.lm.peft_config["default"].base_model_name_or_path)
        (out_dir / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        return out_dir


def grow_embeddings(lm, size: int) -> None:
    """Make room for the vector tokens; new rows = mean embedding + small noise from a fixed seed.

    Deterministic on purpose: a LoRA checkpoint does not store the (frozen) embedding matrix, so loading
    it must recreate exactly the rows it was trained with.
    """
    old = lm.get_input_embeddings().num_embeddings
    if old >= size:
        return
    lm.resize_token_embeddings(size, mean_resizing=False)
    weight = lm.get_input_embeddings().weight
    with torch.no_grad():
        base = weight[:old].float()
        noise = torch.randn(size - old, weight.shape[1], generator=torch.Generator().manual_seed(0))
        weight[old:] = (base.mean(0) + 0.1 * base.std(0) * noise).to(weight.dtype)


def learned_positions(labels: torch.Tensor) -> torch.Tensor:
    """Positions whose next token is learned by some example of the batch (the only logits the loss needs).

    The vocabulary projection of every prompt position is wasted work in training: Gemma-3's 262k-entry
    output layer costs more than its decoder, so the forward asks only for these positions' logits.
    """
    return (labels[:, 1:] != IGNORE).any(dim=0).nonzero(as_tuple=True)[0]


def explanation_loss(logits: torch.Tensor, labels: torch.Tensor, shifted: bool = False) -> torch.Tensor:
    """Per-example mean token cross-entropy over positions with a label, averaged over examples.

    `logits[:, i]` predicts `labels[:, i + 1]`; with `shifted=True` the caller has aligned them already
    (`logits[:, i]` predicts `labels[:, i]`).
    """
    pred, target = (logits.float(), labels) if shifted else (logits[:, :-1].float(), labels[:, 1:])
    token_loss = nn.functional.cross_entropy(
        pred.reshape(-1, pred.shape[-1]), target.reshape(-1), ignore_index=IGNORE, reduction="none"
    ).view(target.shape)
    counts = (target != IGNORE).sum(dim=1)
    keep = counts > 0
    if not keep.any():
        raise ValueError("no example in the batch has explanation tokens to learn")
    per_example = token_loss.sum(dim=1)[keep] / counts[keep]
    return per_example.mean()


@torch.no_grad()
def mean_embedding_norm(lm, sample: int = 8192) -> float:
    """Mean norm of what the input-embedding module outputs for (an even sample of) the vocabulary: the module's
    output, not its weight rows, because some embed scales them (Gemma multiplies by sqrt(hidden))."""
    embed = lm.get_input_embeddings()
    ids = torch.linspace(0, embed.num_embeddings - 1, min(sample, embed.num_embeddings)).long()
    return float(embed(ids.to(embed.weight.device)).float().norm(dim=-1).mean())


def build_explainer(model_dir: str | Path, settings: ExplainerSettings, device: str = "cpu",
                    projection_weights: dict[int, torch.Tensor] | None = None) -> VectorExplainer:
    """A fresh explainer around a materialised model folder."""
    from introspect.models.loading import load_model

    lm, tokenizer, _ = load_model(model_dir, device=device)
    lm.name_or_path = str(model_dir)
    if settings.vector_norm == "embedding":
        norm = mean_embedding_norm(lm)
        log.info("vector_norm 'embedding': Pi_l v rescaled to the mean input-embedding norm %.3f", norm)
        settings = dataclasses.replace(settings, vector_norm=norm)
    return VectorExplainer(lm, tokenizer, settings, projection_weights).to(device)


def load_explainer(checkpoint: str | Path, device: str = "cpu") -> VectorExplainer:
    """Load a checkpoint written by :meth:`VectorExplainer.save` (full or LoRA)."""
    import transformers

    checkpoint = Path(checkpoint)
    config = json.loads((checkpoint / CONFIG_FILE).read_text())
    settings = ExplainerSettings(**config["settings"])
    tokenizer = transformers.AutoTokenizer.from_pretrained(checkpoint / "lm")
    weights = None
    if (checkpoint / PROJECTION_FILE).exists():
        weights = {int(k): v for k, v in load_file(checkpoint / PROJECTION_FILE).items()}
    if settings.tuning == "lora":
        import peft

        base = transformers.AutoModelForCausalLM.from_pretrained(config["base_model"])
        grow_embeddings(base, len(tokenizer))  # the same deterministic rows the adapter was trained with
        lm = peft.PeftModel.from_pretrained(base, checkpoint / "lm")
        explainer = VectorExplainer(lm, tokenizer, dataclasses.replace(settings, tuning="full"), weights)
        explainer.settings = settings
    else:
        lm = transformers.AutoModelForCausalLM.from_pretrained(checkpoint / "lm")
        explainer = VectorExplainer(lm, tokenizer, settings, weights)
    return explainer.to(device).eval()
