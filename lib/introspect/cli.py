"""``introspect describe``: apply a trained feature explainer to a new vector (how a user uses the result);
``introspect check-config FILE``: check a config file as the workflow does, with the line of a YAML error.

Either give the vector(s) directly::

    introspect describe results/smollm2-135m/features/explainers/smollm2-full --layer 8 --vector v.safetensors

(``.safetensors`` (every tensor, or ``--key``), ``.npy`` or ``.pt``; shape (d,) or (n, d)), or let the command
read the activation from the target model::

    introspect describe results/smollm2-135m/features/explainers/smollm2-full --layer 8 \\
        --text "The Eiffel Tower is in Paris" --token -1

The activation is the residual stream after target block ``--layer`` (the convention of the activation cache
and of the SAE), at token ``--token`` of the text (0-based over the text's own tokens, negative from the end;
the BOS the tokenizer adds is not counted). The target model folder is taken from the checkpoint's metadata
unless ``--target`` names one.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where a command needs it: check-config runs without it
    import torch

log = logging.getLogger("introspect.cli")


def read_vectors(path: str | Path, key: str | None = None) -> torch.Tensor:
    """(n, d) float32 vectors from a .safetensors / .npy / .pt file."""
    import torch

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"vector file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        tensors = load_file(path)
        if key is not None:
            if key not in tensors:
                raise KeyError(f"{path} has no tensor {key!r}; it has {sorted(tensors)}")
            tensors = {key: tensors[key]}
        parts = [t.reshape(-1, t.shape[-1]) for _, t in sorted(tensors.items())]
        if not parts or len({p.shape[-1] for p in parts}) > 1:
            raise ValueError(f"{path}: expected tensors with one last dimension; pick one with --key")
        vectors = torch.cat(parts)
    elif path.suffix == ".npy":
        import numpy as np

        vectors = torch.from_numpy(np.load(path))
    elif path.suffix in (".pt", ".pth"):
        vectors = torch.load(path, map_location="cpu", weights_only=True)
    else:
        raise ValueError(f"{path}: unknown vector file type {path.suffix!r}; use .safetensors, .npy or .pt")
    vectors = vectors.float()
    if vectors.ndim == 1:
        vectors = vectors[None]
    if vectors.ndim != 2:
        raise ValueError(f"{path}: expected a vector (d,) or a matrix (n, d), got shape {tuple(vectors.shape)}")
    return vectors


def text_activation(model_dir: str | Path, text: str, layer: int, token: int, device: str = "cpu"
                    ) -> tuple[torch.Tensor, str]:
    """The target's residual stream after block `layer` at `token` of `text`, and that token's text."""
    from introspect.groundtruth.activations import bos_prefix, layer_outputs, pad_id
    from introspect.models.loading import load_model

    model, tokenizer, _ = load_model(model_dir, device=device)
    ids = tokenizer(text, add_special_tokens=False).input_ids
    if not ids:
        raise ValueError("the text tokenises to nothing")
    if not -len(ids) <= token < len(ids):
        raise IndexError(f"--token {token} is outside the text's {len(ids)} tokens: "
                         f"{[tokenizer.decode([t]) for t in ids]}")
    position = token % len(ids)
    prefix = bos_prefix(tokenizer)
    hidden = layer_outputs(model, [prefix + ids], [layer], batch_size=1, pad_id=pad_id(tokenizer), progress=False)
    return hidden[layer][0][len(prefix) + position].float(), tokenizer.decode([ids[position]])


def describe_vectors(checkpoint: str | Path, vectors: torch.Tensor, layer: int, prompt: int = 0,
                     max_new_tokens: int = 32, device: str = "cpu") -> list[str]:
    """Greedy descriptions of `vectors` (target layer `layer`) by a trained feature explainer checkpoint."""
    from introspect.explainers.features import FEATURE_PROMPTS, feature_question
    from introspect.explainers.generation import predict
    from introspect.explainers.model import encode, load_explainer
    from introspect.explainers.training import ExplainerData

    explainer = load_explainer(checkpoint, device=device)
    settings = explainer.settings
    if settings.target_hidden is not None and vectors.shape[1] != settings.target_hidden:
        raise ValueError(f"the checkpoint explains {settings.target_hidden}-dimensional vectors; "
                         f"got {vectors.shape[1]} dimensions")
    if settings.layers and layer not in settings.layers and settings.projection != "none":
        raise ValueError(f"the checkpoint has projections for target layers {list(settings.layers)} only, not {layer}")
    if not 0 <= prompt < len(FEATURE_PROMPTS):
        raise IndexError(f"--prompt must be 0..{len(FEATURE_PROMPTS) - 1} (appendix D questions)")
    question = feature_question(FEATURE_PROMPTS[prompt], layer)
    items = [encode(explainer.tokenizer, question, None, settings.chat) for _ in range(len(vectors))]
    data = ExplainerData(items, vectors, [layer] * len(vectors))
    return predict(explainer, data, batch_size=16, max_new_tokens=max_new_tokens)


def check_config_command(files: list[str]) -> int:
    """`introspect check-config`: 0 when the files are valid, 2 (problems on stderr) otherwise. Several files
    are merged in order first, as `snakemake --configfile A B` merges them (an overlay after its base)."""
    from introspect.config import ConfigError, check_config
    from introspect.configfiles import ConfigFileError, merge_configs, read_config_file

    merged, bad = {}, False
    for name in files:
        try:
            merged = merge_configs(merged, read_config_file(name))
        except ConfigFileError as err:
            print(f"introspect check-config: {err}", file=sys.stderr)
            bad = True
    if bad:
        return 2
    try:
        check_config(merged, root=Path.cwd())
    except ConfigError as err:
        print(f"introspect check-config: {' + '.join(files)}: {err}", file=sys.stderr)
        return 2
    print(f"{' + '.join(files)}: valid")
    return 0


def main(argv: list[str] | None = None) -> int:
    top = argparse.ArgumentParser(prog="introspect", description="Tools around the introspect workflow's results.")
    commands = top.add_subparsers(dest="command", required=True)
    parser = commands.add_parser("describe", help="describe a vector with a trained feature explainer",
                                 description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a trained feature explainer folder (results/<target>/features/explainers/<run>)")
    parser.add_argument("--layer", type=int, required=True, help="the target layer the vector comes from")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--vector", help="a .safetensors / .npy / .pt file holding one vector or a matrix of them")
    source.add_argument("--text", help="text to run through the target; its activation at --token is described")
    parser.add_argument("--key", help="the tensor to read from a .safetensors file (default: all of them)")
    parser.add_argument("--token", type=int, default=-1, help="token index within --text (default -1: the last)")
    parser.add_argument("--target", help="target model folder (default: the one recorded in the checkpoint)")
    parser.add_argument("--prompt", type=int, default=0, help="which appendix-D question to ask (0-5, default 0)")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--json", action="store_true", help="print one JSON object per vector")
    check = commands.add_parser(
        "check-config", help="check config files as the workflow does (YAML errors with their line)",
        description="Read each file strictly (syntax errors and keys written twice, with file:line:column), "
                    "then check it against schemas/config.schema.yaml and its cross-references, as "
                    "`snakemake -n --configfile FILE` does. Exit status 0 when every file is valid.")
    check.add_argument("files", nargs="+", help="config files (config.yaml, configs/*.yaml or your own); several "
                       "are merged in order, as snakemake --configfile merges them (base first, then overlays)")
    args = top.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    if args.command == "check-config":
        return check_config_command(args.files)

    from introspect.models.loading import resolve_device

    device = resolve_device(args.device)
    checkpoint = Path(args.checkpoint)
    config_file = checkpoint / "explainer.json"
    try:
        if not config_file.exists():
            raise FileNotFoundError(f"{checkpoint} is not an explainer checkpoint (no explainer.json); train one "
                                    "with `snakemake results/<target>/features/explainers/<run>`")
        if args.vector:
            vectors, where = read_vectors(args.vector, args.key), [args.vector]
        else:
            target = args.target or json.loads(config_file.read_text())["metadata"].get("target_model")
            if not target:
                raise ValueError("the checkpoint does not record its target model; pass --target <model folder>")
            vector, token = text_activation(target, args.text, args.layer, args.token, device)
            vectors, where = vector[None], [f"token {args.token} ({token!r}) of the text"]
        descriptions = describe_vectors(checkpoint, vectors, args.layer, args.prompt, args.max_new_tokens, device)
    except (FileNotFoundError, ValueError, KeyError, IndexError) as err:
        print(f"introspect describe: error: {err}", file=sys.stderr)
        return 2
    for i, text in enumerate(descriptions):
        if args.json:
            print(json.dumps({"index": i, "layer": args.layer, "description": text}))
        else:
            label = where[0] if len(descriptions) == 1 else f"vector {i}"
            print(f"{label} @ layer {args.layer}: {text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
