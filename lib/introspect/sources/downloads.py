"""Downloads of published SAE features and their labels: LlamaScope weights and Neuronpedia explanations.

Paper section 3.1 and appendix E.1: the directions v are Llama-Scope residual-stream SAE features of
Llama-3.1-8B (``LXR-32x``: 32 x 4096 = 131072 features per layer) and the ground-truth explanations E come
from Neuronpedia. Both sources are turned into one plain file per layer:

- :func:`download_llamascope_layer` fetches ``{folder}/checkpoints/final.safetensors`` (and
  ``{folder}/hyperparams.json``) of one layer through ``huggingface_hub`` (so ``HF_ENDPOINT``, ``HF_TOKEN``,
  ``HF_HOME`` and the hub cache apply) and writes a safetensors file with the keys of :data:`SAE_KEYS`;
- :func:`download_neuronpedia_explanations` lists Neuronpedia's public dataset bucket
  (``neuronpedia-datasets``, prefix ``v1/{model_id}/{sae_id}/explanations/``, files ``batch-N.jsonl.gz``)
  over plain HTTPS and writes a Parquet table with the columns of :data:`EXPLANATION_COLUMNS`.

Every output is written to a temporary file in the destination folder and moved into place only when
complete, so a failure never leaves a partial output. Every failure is a :class:`DownloadError` that names
the source (URL, repository and file), the cause (HTTP status, parse error, line number) and what to do.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import re
import tempfile
import time
import urllib.parse
import xml.etree.ElementTree as ET
import zlib
from pathlib import Path
from typing import Any, Callable, Iterator

log = logging.getLogger(__name__)


LLAMASCOPE_REPO = "fnlp/Llama3_1-8B-Base-LXR-32x"


LLAMASCOPE_FOLDER = "Llama3_1-8B-Base-L{layer}R-32x"


LLAMASCOPE_WEIGHTS = "{folder}/checkpoints/final.safetensors"


LLAMASCOPE_HYPERPARAMS = "{folder}/hyperparams.json"


NEURONPEDIA_BUCKET_URL = "https://neuronpedia-datasets.s3.us-east-1.amazonaws.com"


NEURONPEDIA_PREFIX = "v1/{model_id}/{sae_id}/explanations/"


#: Keys of the safetensors file :func:`download_llamascope_layer` writes. Feature i is row i of every
#: (n_features, ...) tensor; values are the checkpoint's own (not unit-normalised, no folded scaling).
SAE_KEYS = {
    "decoder": "(n_features, d_model): feature i's decoder direction, the vector v of the paper",
    "decoder_bias": "(d_model,): added to the reconstruction, when the checkpoint has one",
    "encoder": "(n_features, d_model): pre-activation_i = encoder[i] . x + encoder_bias[i]",
    "encoder_bias": "(n_features,)",
    "threshold": "(n_features,): JumpReLU threshold, from the checkpoint or hyperparams.json",
}


#: Columns of the Parquet table :func:`download_neuronpedia_explanations` writes (one row per explanation:
#: a feature may have several, from different explainer models or explanation types).
EXPLANATION_COLUMNS = ("layer", "feature", "description", "explainer_model", "explanation_type")


DTYPE_NAMES = ("float32", "bfloat16", "float16")


_S3_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


# (decoder, decoder_bias, encoder, encoder_bias, whether the decoder is stored (d_model, n_features))
_KEY_CONVENTIONS = (
    ("decoder.weight", "decoder.bias", "encoder.weight", "encoder.bias", True),  # LlamaScope (nn.Linear)
    ("W_dec", "b_dec", "W_enc", "b_enc", False),  # SAELens
    ("W_D", "b_D", "W_E", "b_E", False),  # newer OpenMOSS lm-saes
)


class DownloadError(RuntimeError):
    """A download or the file it produced is unusable; the message names the source, the cause and a fix."""


def _cause(err: BaseException) -> str:
    """One line describing `err`, with its HTTP status when it carries one."""
    text = " ".join(str(err).split()).rstrip(".") or type(err).__name__
    response = getattr(err, "response", None)
    status = getattr(response, "status_code", None)
    return f"HTTP {status}: {text}" if status and str(status) not in text else text


def _atomic_write(out_path: Path, write: Callable[[Path], None]) -> Path:
    """Write `out_path` through `write(tmp)` (a file in the same folder) and move it into place when complete."""
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out_path.name}.", suffix=".tmp", dir=out_path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.replace(tmp, out_path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out_path


def download_llamascope_layer(
    repo_id: str,
    layer: int,
    out_path: str | Path,
    revision: str | None = None,
    subfolder_pattern: str = LLAMASCOPE_FOLDER,
    *,
    dtype: str | None = "float32",
    with_encoder: bool = True,
    expected_d_model: int | None = None,
    cache_dir: str | Path | None = None,
    endpoint: str | None = None,
    token: bool | str | None = None,
    force_download: bool = False,
) -> Path:
    """Fetch one layer of a LlamaScope SAE and write its feature directions as one safetensors file.

    `repo_id` is a hub repository (``fnlp/Llama3_1-8B-Base-LXR-32x``) or a local folder with the same
    layout (``{folder}/checkpoints/final.safetensors``, ``{folder}/hyperparams.json``), where
    ``folder = subfolder_pattern.format(layer=layer)``. Layer L's SAE reads ``blocks.L.hook_resid_post``,
    the residual stream after decoder layer L. The output holds the keys of :data:`SAE_KEYS` (the encoder
    ones only with `with_encoder`) in `dtype` (None: the checkpoint's own), and string metadata: source,
    commit, file, layer, shapes and the checkpoint's ``hyperparams.json`` (input normalisation, threshold).
    `endpoint` defaults to ``HF_ENDPOINT`` read at call time. Returns `out_path`.
    """
    import torch
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import save_file

    from introspect.tensorfiles import canonical_header

    if dtype is not None and dtype not in DTYPE_NAMES:
        raise ValueError(f"dtype must be one of {DTYPE_NAMES} or None, got {dtype!r}")
    out_path = Path(out_path)
    folder = subfolder_pattern.format(layer=layer)
    weights_file = LLAMASCOPE_WEIGHTS.format(folder=folder)
    where = f"{repo_id}/{weights_file}" + (f"@{revision}" if revision else "")
    fetch = _llamascope_fetcher(repo_id, revision, cache_dir, endpoint, token, force_download, layer, subfolder_pattern)

    weights_path = fetch(weights_file, required=True)
    hyperparams_path = fetch(LLAMASCOPE_HYPERPARAMS.format(folder=folder), required=False)
    hyperparams = _read_hyperparams(hyperparams_path, repo_id) if hyperparams_path else {}

    fix = (f"the file is truncated or not a safetensors file; delete the cached copy ({weights_path}) "
           "and download again (force_download=True), or check the local copy")
    try:
        with safe_open(str(weights_path), framework="pt") as handle:
            keys = set(handle.keys())
            convention = next((c for c in _KEY_CONVENTIONS if c[0] in keys), None)
            if convention is None:
                known = sorted(c[0] for c in _KEY_CONVENTIONS)
                raise DownloadError(f"{where}: no decoder tensor (one of {known}) among the keys {sorted(keys)}; "
                                    "this is not a LlamaScope/SAELens SAE checkpoint; check repo_id and subfolder_pattern")
            dec_key, dec_bias_key, enc_key, enc_bias_key, transposed = convention
            raw = {"decoder": handle.get_tensor(dec_key)}
            source_dtype = str(raw["decoder"].dtype).removeprefix("torch.")
            if dec_bias_key in keys:
                raw["decoder_bias"] = handle.get_tensor(dec_bias_key)
            if with_encoder:
                for name, key in (("encoder", enc_key), ("encoder_bias", enc_bias_key)):
                    if key not in keys:
                        raise DownloadError(f"{where}: the checkpoint has no {key!r} (keys: {sorted(keys)}); "
                                            "pass with_encoder=False to keep only the decoder")
                    raw[name] = handle.get_tensor(key)
                if "log_jumprelu_threshold" in keys:
                    raw["threshold"] = handle.get_tensor("log_jumprelu_threshold").float().exp()
                elif "threshold" in keys:
                    raw["threshold"] = handle.get_tensor("threshold")
    except SafetensorError as err:
        raise DownloadError(f"{where}: cannot read the safetensors file: {_cause(err)}; {fix}") from err

    tensors = _orient(raw, transposed, with_encoder, where)
    n_features, d_model = tensors["decoder"].shape
    _check_shapes(tensors, hyperparams, expected_d_model, where)
    if with_encoder and "threshold" not in tensors and "jump_relu_threshold" in hyperparams:
        tensors["threshold"] = torch.full((n_features,), float(hyperparams["jump_relu_threshold"]))
    if dtype is not None:
        tensors = {k: v.to(getattr(torch, dtype)) for k, v in tensors.items()}
    tensors = {k: v.contiguous() for k, v in tensors.items()}

    metadata = {
        "format": "introspect-sae-features",
        "source": str(repo_id),
        "revision": revision or "main",
        "commit": _snapshot_commit(weights_path) or "",
        "file": weights_file,
        "layer": str(layer),
        "n_features": str(n_features),
        "d_model": str(d_model),
        "source_dtype": source_dtype,
        "source_keys": json.dumps(sorted(keys)),
        "hook_point_in": str(hyperparams.get("hook_point_in", "")),
        "hyperparams": json.dumps(hyperparams, sort_keys=True),
    }
    _atomic_write(out_path, lambda tmp: (save_file(tensors, str(tmp), metadata=metadata), canonical_header(tmp)))
    log.info("wrote %d features x %d dims of %s (layer %d) to %s", n_features, d_model, repo_id, layer, out_path)
    return out_path


def _llamascope_fetcher(repo_id, revision, cache_dir, endpoint, token, force_download, layer, pattern):
    """A function that returns the local path of a file of the SAE repository (or None for a missing optional one)."""
    local = Path(repo_id).expanduser()
    if local.is_dir():
        def fetch_local(filename: str, required: bool) -> Path | None:
            path = local / filename
            if path.is_file():
                return path
            if required:
                raise DownloadError(f"{local}/{filename}: no such file in the local copy of the SAE repository; "
                                    f"check the layer ({layer}) and subfolder_pattern ({pattern!r})")
            log.warning("%s/%s is missing; the output will lack the threshold and input-norm metadata", local, filename)
            return None
        return fetch_local

    import huggingface_hub
    from huggingface_hub import constants
    from huggingface_hub.errors import RemoteEntryNotFoundError

    hub = (endpoint or os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")

    def fetch_hub(filename: str, required: bool) -> Path | None:
        log.info("downloading %s/%s from %s", repo_id, filename, hub)
        try:
            return Path(huggingface_hub.hf_hub_download(
                repo_id, filename, revision=revision, cache_dir=cache_dir, endpoint=hub, token=token,
                force_download=force_download,
            ))
        except RemoteEntryNotFoundError as err:
            if not required:
                log.warning("%s/%s is not on %s; the output will lack the threshold and input-norm metadata",
                            repo_id, filename, hub)
                return None
            raise DownloadError(
                f"could not download {repo_id}/{filename} (revision {revision or 'main'}) from {hub}: {_cause(err)}. "
                f"The repository has no such file: check the layer ({layer}; LlamaScope has layers 0-31) and "
                f"subfolder_pattern ({pattern!r}), or point repo_id at a local copy"
            ) from err
        except Exception as err:  # huggingface_hub raises OSError subclasses, httpx errors and ValueErrors
            raise DownloadError(
                f"could not download {repo_id}/{filename} (revision {revision or 'main'}) from {hub}: {_cause(err)}. "
                "Check the network (or HF_ENDPOINT), set HF_TOKEN for gated or private repositories, "
                "pre-fill the hub cache (HF_HOME) and set HF_HUB_OFFLINE=1, or point repo_id at a local copy"
            ) from err

    return fetch_hub


def _read_hyperparams(path: Path, repo_id: str) -> dict[str, Any]:
    try:
        hyperparams = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DownloadError(f"{repo_id}: cannot read {path.name} ({path}): {_cause(err)}; "
                            "delete the cached copy and download again") from err
    if not isinstance(hyperparams, dict):
        raise DownloadError(f"{repo_id}: {path.name} ({path}) is not a JSON object")
    return hyperparams


def _orient(raw: dict, transposed: bool, with_encoder: bool, where: str) -> dict:
    """Bring every weight matrix to (n_features, d_model); LlamaScope's decoder.weight is (d_model, n_features)."""
    out = dict(raw)
    for name in ("decoder", "encoder") if with_encoder else ("decoder",):
        if out[name].ndim != 2:
            raise DownloadError(f"{where}: {name} has shape {tuple(out[name].shape)}; expected a matrix")
    # nn.Linear(n_features, d_model).weight is (d_model, n_features); nn.Linear(d_model, n_features).weight is
    # (n_features, d_model) already. SAELens/lm-saes W_dec is (n_features, d_model), W_enc (d_model, n_features).
    if transposed:
        out["decoder"] = out["decoder"].T
    elif with_encoder:
        out["encoder"] = out["encoder"].T
    return out


def _check_shapes(tensors: dict, hyperparams: dict, expected_d_model: int | None, where: str) -> None:
    """Decoder rows must be the features and columns the model's hidden size; the other tensors must agree."""
    n_features, d_model = tensors["decoder"].shape
    want = {"n_features": hyperparams.get("d_sae"), "d_model": hyperparams.get("d_model")}
    if expected_d_model is not None:
        want["d_model"] = expected_d_model
    got = {"n_features": n_features, "d_model": d_model}
    for name, value in want.items():
        if value is not None and int(value) != got[name]:
            raise DownloadError(
                f"{where}: the decoder is {n_features} features x {d_model} dims but {name} should be {value} "
                "(from hyperparams.json or expected_d_model); the file is not the SAE you asked for: check the "
                "repository, layer and subfolder_pattern"
            )
    expected = {"decoder_bias": (d_model,), "encoder": (n_features, d_model), "encoder_bias": (n_features,),
                "threshold": (n_features,)}
    for name, shape in expected.items():
        if name in tensors and tuple(tensors[name].shape) != shape:
            raise DownloadError(f"{where}: {name} has shape {tuple(tensors[name].shape)} but the decoder implies "
                                f"{shape}; the checkpoint is inconsistent")


def _snapshot_commit(path: Path) -> str | None:
    """The commit hash of a file in the hub cache (``.../snapshots/<commit>/<filename>``), else None."""
    parts = Path(path).parts
    if "snapshots" in parts:
        index = len(parts) - 1 - parts[::-1].index("snapshots")
        if index + 1 < len(parts):
            return parts[index + 1]
    return None


GEMMASCOPE_REPO = "google/gemma-scope-9b-pt-res-canonical"


GEMMASCOPE_FILE = "layer_{layer}/width_131k/canonical/params.npz"


def download_gemmascope_layer(repo_id: str, layer: int, out_path: str | Path, file_pattern: str = GEMMASCOPE_FILE,
                              revision: str | None = None, *, expected_d_model: int | None = None,
                              cache_dir: str | Path | None = None, endpoint: str | None = None,
                              token: bool | str | None = None) -> Path:
    """Fetch one layer of a Gemma Scope JumpReLU SAE (``params.npz``: W_enc (d, F), W_dec (F, d), b_enc, b_dec,
    threshold) and write it with the keys of :data:`SAE_KEYS`. Gemma Scope reads raw residual activations
    (no input normalisation), recorded as ``input_norm: none`` in the metadata. `repo_id` may be a local copy."""
    import io

    import numpy as np
    import torch
    from safetensors.torch import save_file

    from introspect.tensorfiles import canonical_header

    out_path = Path(out_path)
    filename = file_pattern.format(layer=layer)
    where = f"{repo_id}/{filename}" + (f"@{revision}" if revision else "")
    fetch = _llamascope_fetcher(repo_id, revision, cache_dir, endpoint, token, False, layer, file_pattern)
    path = fetch(filename, required=True)
    try:
        with np.load(io.BytesIO(Path(path).read_bytes())) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, EOFError) as err:
        raise DownloadError(f"{where}: cannot read the .npz file: {_cause(err)}; delete the cached copy ({path}) "
                            "and download again") from err
    missing = {"W_enc", "W_dec", "b_enc", "threshold"} - set(arrays)
    if missing:
        raise DownloadError(f"{where}: missing {sorted(missing)} (keys: {sorted(arrays)}); not a Gemma Scope SAE")
    tensors = {"encoder": torch.from_numpy(arrays["W_enc"]).float().T.contiguous(),
               "encoder_bias": torch.from_numpy(arrays["b_enc"]).float(),
               "decoder": torch.from_numpy(arrays["W_dec"]).float().contiguous(),
               "threshold": torch.from_numpy(arrays["threshold"]).float()}
    if "b_dec" in arrays:
        tensors["decoder_bias"] = torch.from_numpy(arrays["b_dec"]).float()
    n_features, d_model = tensors["decoder"].shape
    if tensors["encoder"].shape != (n_features, d_model):
        raise DownloadError(f"{where}: W_enc is {tuple(arrays['W_enc'].shape)} but W_dec is "
                            f"{tuple(arrays['W_dec'].shape)}; expected (d, F) and (F, d)")
    if expected_d_model is not None and d_model != expected_d_model:
        raise DownloadError(f"{where}: the SAE reads {d_model}-d activations but the model's are "
                            f"{expected_d_model}-d; check the repository and layer")
    metadata = {"format": "introspect-sae-features", "source": str(repo_id), "revision": revision or "main",
                "file": filename, "layer": str(layer), "n_features": str(n_features), "d_model": str(d_model),
                "input_norm": "none"}
    _atomic_write(out_path, lambda tmp: (save_file(tensors, str(tmp), metadata=metadata), canonical_header(tmp)))
    log.info("wrote %d features x %d dims of %s (layer %d) to %s", n_features, d_model, repo_id, layer, out_path)
    return out_path


def download_neuronpedia_explanations(
    model_id: str,
    sae_id: str,
    out_path: str | Path,
    base_url: str = NEURONPEDIA_BUCKET_URL,
    prefix_template: str = NEURONPEDIA_PREFIX,
    max_files: int | None = None,
    timeout: float = 60,
    *,
    retries: int = 3,
    backoff: float = 1.0,
) -> Path:
    """Download Neuronpedia's explanation export of one SAE and write it as a Parquet table.

    Lists ``{base_url}/?list-type=2&prefix={prefix}`` (S3 ListObjectsV2, all pages), downloads every
    ``*.jsonl.gz`` under the prefix in batch order (the first `max_files` only, when given) and keeps, per
    record, the columns of :data:`EXPLANATION_COLUMNS`: `layer` is the number that starts `sae_id`
    (``15-llamascope-res-131k`` -> 15), `feature` the record's ``index``, `description` its ``description``
    (stripped; empty ones are dropped and counted), `explainer_model` its ``explanationModelName`` and
    `explanation_type` its ``typeName`` (null when absent). Rows are sorted by feature, in file order within
    a feature. Timeouts, connection errors and HTTP 5xx are retried `retries` times. Returns `out_path`.
    """
    import polars as pl
    import requests

    out_path = Path(out_path)
    match = re.match(r"(\d+)-", sae_id)
    if match is None:
        raise ValueError(f"sae_id {sae_id!r} does not start with a layer number (like '15-llamascope-res-131k')")
    layer = int(match.group(1))
    base_url = base_url.rstrip("/")
    prefix = prefix_template.format(model_id=model_id, sae_id=sae_id)

    with requests.Session() as session:
        get = _HttpGetter(session, timeout, retries, backoff)
        keys = _list_bucket(get, base_url, prefix)
        files = sorted((k for k in keys if k.endswith(".jsonl.gz")), key=_natural_key)
        if not files:
            listing = f"{base_url}/?list-type=2&prefix={prefix}"
            found = f" (only {sorted(keys)[:5]})" if keys else ""
            raise DownloadError(
                f"nothing found under the prefix {prefix!r} at {listing}{found}: Neuronpedia has no explanation "
                f"export for model {model_id!r} and SAE {sae_id!r}; check both ids (LlamaScope: 'llama3.1-8b' and "
                f"'{{layer}}-llamascope-res-131k') or use a local copy"
            )
        if max_files is not None:
            files = files[:max_files]
        log.info("downloading %d explanation files of %s/%s from %s", len(files), model_id, sae_id, base_url)

        columns: dict[str, list] = {name: [] for name in EXPLANATION_COLUMNS}
        empty = 0
        with tempfile.TemporaryDirectory(prefix=".neuronpedia-", dir=_existing_parent(out_path)) as scratch:
            from tqdm.auto import tqdm

            for key in tqdm(files, desc=f"{sae_id} explanations", unit="file", mininterval=10, disable=None):
                url = f"{base_url}/{urllib.parse.quote(key)}"
                local = Path(scratch) / "batch.jsonl.gz"
                get.to_file(url, local)
                for record in _jsonl_gz_records(local, url):
                    description = record["description"]
                    if not description:
                        empty += 1
                        continue
                    columns["layer"].append(layer)
                    columns["feature"].append(record["feature"])
                    columns["description"].append(description)
                    columns["explainer_model"].append(record["explainer_model"])
                    columns["explanation_type"].append(record["explanation_type"])

    table = pl.DataFrame(columns, schema={"layer": pl.Int64, "feature": pl.Int64, "description": pl.String,
                                          "explainer_model": pl.String, "explanation_type": pl.String})
    table = table.sort("feature", maintain_order=True)
    if empty:
        log.warning("%s/%s: dropped %d explanations with an empty description", model_id, sae_id, empty)
    log.info("%s/%s: %d explanations of %d features", model_id, sae_id, table.height, table["feature"].n_unique())
    _atomic_write(out_path, lambda tmp: table.write_parquet(tmp))
    return out_path


def _existing_parent(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.parent


def _natural_key(key: str) -> tuple:
    """``batch-2`` before ``batch-10``: digits compare as numbers."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", key))


class _HttpGetter:
    """GET with bounded retries on timeouts, dropped connections and HTTP 5xx; other failures raise DownloadError."""

    def __init__(self, session, timeout: float, retries: int, backoff: float):
        self.session, self.timeout, self.retries, self.backoff = session, timeout, retries, backoff

    def _request(self, url: str, stream: bool):
        import requests

        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                response = self.session.get(url, timeout=self.timeout, stream=stream)
            except (requests.Timeout, requests.ConnectionError) as err:
                if last:
                    raise DownloadError(f"GET {url} failed after {self.retries + 1} attempts: {_cause(err)}; "
                                        "check the network (or base_url) and try again") from err
                cause = _cause(err)
            else:
                if response.status_code < 500 or last:
                    return response
                cause = f"HTTP {response.status_code}"
                response.close()
            wait = self.backoff * 2 ** attempt
            log.warning("GET %s: %s; retrying in %.1f s (%d/%d)", url, cause, wait, attempt + 1, self.retries)
            time.sleep(wait)
        raise AssertionError("unreachable")

    def _raise_for_status(self, response, url: str) -> None:
        if response.status_code == 200:
            return
        code = _s3_error_code(response.text)
        hint = {404: "the object does not exist (the listing is stale or the prefix is wrong)",
                403: "access denied: the bucket or prefix is not public"}
        if response.status_code >= 500:
            hint[response.status_code] = f"the server kept failing ({self.retries + 1} attempts)"
        raise DownloadError(
            f"GET {url}: HTTP {response.status_code}{f' ({code})' if code else ''}: "
            f"{hint.get(response.status_code, 'the server refused the request')}; "
            "check model_id, sae_id and base_url, try again later, or use a local copy"
        )

    def text(self, url: str) -> str:
        response = self._request(url, stream=False)
        self._raise_for_status(response, url)
        return response.text

    def to_file(self, url: str, path: Path) -> None:
        import requests

        for attempt in range(self.retries + 1):
            response = self._request(url, stream=True)
            with response:
                self._raise_for_status(response, url)
                try:
                    with path.open("wb") as stream:
                        for chunk in response.iter_content(chunk_size=1 << 20):
                            stream.write(chunk)
                    return
                except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as err:
                    if attempt == self.retries:
                        raise DownloadError(f"GET {url}: the transfer broke off after {self.retries + 1} attempts "
                                            f"({_cause(err)}); check the network and try again") from err
                    log.warning("GET %s: the transfer broke off (%s); retrying", url, _cause(err))
                    time.sleep(self.backoff * 2 ** attempt)


def _s3_error_code(body: str) -> str | None:
    """The ``<Code>`` of an S3 error document, if the body is one."""
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        return None
    code = root.find("Code")
    if code is None:
        code = root.find(f"{_S3_NS}Code")
    return code.text if code is not None else None


def _list_bucket(get: _HttpGetter, base_url: str, prefix: str) -> list[str]:
    """Every key under `prefix`, following ListObjectsV2 continuation tokens."""
    keys: list[str] = []
    token: str | None = None
    while True:
        query = {"list-type": "2", "prefix": prefix}
        if token:
            query["continuation-token"] = token
        url = f"{base_url}/?{urllib.parse.urlencode(query)}"
        body = get.text(url)
        try:
            root = ET.fromstring(body)
        except ET.ParseError as err:
            raise DownloadError(f"GET {url}: the listing is not S3 ListObjectsV2 XML ({err}); "
                                "check base_url (it must be the bucket's HTTPS endpoint)") from err
        ns = _S3_NS if root.tag.startswith(_S3_NS) else ""
        if root.tag != f"{ns}ListBucketResult":
            raise DownloadError(f"GET {url}: expected a ListBucketResult, got <{root.tag}>; check base_url")
        keys += [node.text for node in root.iterfind(f"{ns}Contents/{ns}Key") if node.text]
        truncated = (root.findtext(f"{ns}IsTruncated") or "false").strip().lower() == "true"
        token = root.findtext(f"{ns}NextContinuationToken")
        if not truncated:
            return keys
        if not token:
            raise DownloadError(f"GET {url}: the listing is truncated but has no NextContinuationToken")


def _jsonl_gz_records(path: Path, url: str) -> Iterator[dict[str, Any]]:
    """The records of one gzipped JSONL export file; a broken file or line raises DownloadError naming it."""
    fix = "download it again; if it persists, report it to Neuronpedia or use a local copy"
    line_number = 0
    try:
        with gzip.open(path, "rt", encoding="utf-8") as stream:
            for line_number, line in enumerate(stream, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as err:
                    raise DownloadError(f"{url} line {line_number}: malformed JSON ({err}); {fix}") from err
                yield _explanation(record, url, line_number)
    except (EOFError, OSError, zlib.error, UnicodeDecodeError) as err:
        raise DownloadError(f"{url}: the gzip file is truncated or corrupt after line {line_number} "
                            f"({_cause(err)}); {fix}") from err


def _explanation(record: Any, url: str, line_number: int) -> dict[str, Any]:
    where = f"{url} line {line_number}"
    if not isinstance(record, dict):
        raise DownloadError(f"{where}: expected a JSON object, got {type(record).__name__}")
    index = record.get("index")
    try:
        feature = int(index)
        if isinstance(index, float) or isinstance(index, bool):
            raise ValueError(index)
    except (TypeError, ValueError) as err:
        raise DownloadError(f"{where}: 'index' is {index!r}; expected a feature number") from err
    description = record.get("description")
    if description is not None and not isinstance(description, str):
        raise DownloadError(f"{where}: 'description' is {type(description).__name__}; expected a string")

    def optional_str(key: str) -> str | None:
        value = record.get(key)
        return value if isinstance(value, str) and value else None

    return {"feature": feature, "description": (description or "").strip(),
            "explainer_model": optional_str("explanationModelName"), "explanation_type": optional_str("typeName")}
