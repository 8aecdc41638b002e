"""The model registry: what a model entry of the config says (source, architecture, sizes, tokenizer).

:class:`ModelSpec` is one ``models.<name>`` entry, :class:`TokenizerSpec` the part that decides its tokenizer
(a random model borrows a real model's), :class:`ModelInfo` the ``introspect.json`` written beside a
materialised model (provenance, dtype, the logits check).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any


SOURCES = ("gguf_wheel", "hf", "random")


ARCHITECTURES = ("llama", "gemma3_text")


INFO_FILE = "introspect.json"


def __getattr__(name: str):
    """``DTYPES`` (dtype name -> torch dtype), built on first use: the registry is read by the config check
    that every `snakemake` start runs, which must not pay for importing torch (2.3 s here)."""
    if name == "DTYPES":
        import torch

        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class ModelRegistryError(ValueError):
    """A registry entry is inconsistent with itself or with the model it names."""


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """One entry of the config's ``models:`` registry."""

    name: str
    source: str
    n_layers: int
    hidden_size: int
    dtype: str = "float32"
    instruct: bool = False  # an instruction-tuned chat model
    train_gpus: int | None = None  # GPUs (ranks) of a training job with this model as explainer; None: compute.gpus.train
    n_params: int | None = None  # parameter count, for job sizing (None: estimated from the shape)
    vocab_size: int | None = None  # for job sizing (None: Llama-3's 128,256)
    chat_template: str | None = None  # a name in introspect.models.chat, for tokenizers without one
    # gguf_wheel
    package: str | None = None
    file: str | None = None
    assemble: bool = False  # the package ships chunks that its assemble() joins into `file`
    # hf
    repo_id: str | None = None
    revision: str = "main"
    # random
    architecture: str | None = None
    tokenizer: str | None = None  # registry name of the model whose tokenizer a random model uses
    intermediate_size: int | None = None
    n_heads: int = 4
    n_kv_heads: int = 2
    seed: int = 0

    @classmethod
    def from_config(cls, name: str, entry: dict[str, Any]) -> "ModelSpec":
        """Build a spec from a registry entry (already schema-validated)."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(entry) - fields
        if unknown:
            raise ModelRegistryError(f"models.{name}: unknown keys {sorted(unknown)}")
        return cls(name=name, **entry)

    @property
    def tokenizer_model(self) -> str:
        """Registry name of the model whose tokenizer this model uses."""
        return self.tokenizer if self.source == "random" else self.name

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def tokenizer_spec(self) -> "TokenizerSpec":
        """The fields that determine this model's tokenizer (so that editing others does not rebuild it)."""
        return TokenizerSpec(**{f.name: getattr(self, f.name) for f in dataclasses.fields(TokenizerSpec)})


@dataclasses.dataclass(frozen=True)
class TokenizerSpec:
    """Where a gguf_wheel or hf model's tokenizer comes from (a subset of :class:`ModelSpec`)."""

    name: str
    source: str
    chat_template: str | None = None
    package: str | None = None
    file: str | None = None
    assemble: bool = False
    repo_id: str | None = None
    revision: str = "main"


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """What ``introspect.json`` records about a materialised model."""

    name: str
    source: str
    architecture: str
    n_layers: int
    hidden_size: int
    vocab_size: int
    dtype: str
    has_chat_template: bool
    chat_template_origin: str | None
    check: dict[str, Any] | None
    provenance: dict[str, Any]

    @classmethod
    def read(cls, model_dir: str | Path) -> "ModelInfo":
        path = Path(model_dir) / INFO_FILE
        if not path.exists():
            raise FileNotFoundError(
                f"{path} is missing: {model_dir} is not a materialised model folder "
                "(build it with `snakemake resources/models/<name>`)"
            )
        return cls(**json.loads(path.read_text()))

    def write(self, model_dir: str | Path) -> None:
        text = json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)
        (Path(model_dir) / INFO_FILE).write_text(text + "\n")
