"""Downloads against real local servers on 127.0.0.1: a fake Hugging Face hub and a fake S3 bucket.

The fakes implement what the clients really request: ``HEAD``/``GET /{repo}/resolve/{revision}/{file}``
with ``X-Repo-Commit``/``ETag``/``Content-Length`` (and ``X-Error-Code: EntryNotFound`` on 404) for
``huggingface_hub.hf_hub_download``; ``GET /?list-type=2&prefix=...[&continuation-token=...]`` (ListObjectsV2
XML) and ``GET /{key}`` for the Neuronpedia bucket.
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import json
import logging
import threading
import urllib.parse
from pathlib import Path
from xml.sax.saxutils import escape

import polars as pl
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save

from introspect.sources.downloads import DownloadError, download_llamascope_layer, download_neuronpedia_explanations

COMMIT = "0123456789abcdef0123456789abcdef01234567"
REPO = "fnlp/Llama3_1-8B-Base-LXR-32x"
N_FEATURES, D_MODEL = 16, 8


class _Server:
    """A ThreadingHTTPServer on an ephemeral 127.0.0.1 port running `handle(handler, method)`."""

    def __init__(self, handle):
        outer = self
        self.requests: list[tuple[str, str]] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_HEAD(self):
                outer.requests.append(("HEAD", self.path))
                handle(self, "HEAD")

            def do_GET(self):
                outer.requests.append(("GET", self.path))
                handle(self, "GET")

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def _reply(handler, method: str, status: int, body: bytes = b"", headers: dict[str, str] | None = None):
    handler.send_response(status)
    for key, value in (headers or {}).items():
        handler.send_header(key, value)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    if method == "GET":
        handler.wfile.write(body)


@pytest.fixture
def serve():
    servers = []

    def start(handle) -> _Server:
        servers.append(_Server(handle))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# ----------------------------------------------------------------------------------------------
# fake hub


def _sae_checkpoint(seed: int = 0) -> dict[str, torch.Tensor]:
    """LlamaScope's layout: nn.Linear weights, decoder.weight is (d_model, n_features)."""
    gen = torch.Generator().manual_seed(seed)
    return {
        "encoder.weight": torch.randn(N_FEATURES, D_MODEL, generator=gen).to(torch.bfloat16),
        "encoder.bias": torch.randn(N_FEATURES, generator=gen).to(torch.bfloat16),
        "decoder.weight": torch.randn(D_MODEL, N_FEATURES, generator=gen).to(torch.bfloat16),
        "decoder.bias": torch.randn(D_MODEL, generator=gen).to(torch.bfloat16),
    }


def _hyperparams(layer: int) -> dict:
    return {"hook_point_in": f"blocks.{layer}.hook_resid_post", "hook_point_out": f"blocks.{layer}.hook_resid_post",
            "d_model": D_MODEL, "d_sae": N_FEATURES, "expansion_factor": 2, "act_fn": "jumprelu",
            "jump_relu_threshold": 0.75, "dataset_average_activation_norm": {"in": 29.125, "out": 29.125},
            "sparsity_include_decoder_norm": True}


@pytest.fixture
def fake_hub(serve, monkeypatch, tmp_path):
    """Serve `files` ({path in repo: bytes}) of REPO like the hub does; HF_ENDPOINT points at it."""
    files: dict[str, bytes] = {}

    def handle(handler, method):
        parts = urllib.parse.urlsplit(handler.path).path.lstrip("/").split("/")
        repo, kind, revision, filename = "/".join(parts[:2]), parts[2], parts[3], "/".join(parts[4:])
        headers = {"X-Repo-Commit": COMMIT}
        if repo != REPO or kind != "resolve":
            return _reply(handler, method, 401, b"", headers | {"X-Error-Code": "RepoNotFound"})
        if filename not in files:
            return _reply(handler, method, 404, b"Entry not found", headers | {"X-Error-Code": "EntryNotFound"})
        body = files[filename]
        headers["ETag"] = f'"{hashlib.sha256(body).hexdigest()}"'
        _reply(handler, method, 200, body, headers)

    server = serve(handle)
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    server.files = files
    return server


def _llamascope(layer, out, **kwargs):
    kwargs.setdefault("cache_dir", out.parent.parent / "hf-cache")
    return download_llamascope_layer(REPO, layer, out, token=False, **kwargs)


def test_llamascope_layer_from_the_hub(fake_hub, tmp_path):
    checkpoint = _sae_checkpoint()
    fake_hub.files["Llama3_1-8B-Base-L3R-32x/checkpoints/final.safetensors"] = save(checkpoint)
    fake_hub.files["Llama3_1-8B-Base-L3R-32x/hyperparams.json"] = json.dumps(_hyperparams(3)).encode()
    out = tmp_path / "out" / "layer3.safetensors"

    assert _llamascope(3, out, expected_d_model=D_MODEL) == out

    with safe_open(str(out), framework="pt") as f:
        assert set(f.keys()) == {"decoder", "decoder_bias", "encoder", "encoder_bias", "threshold"}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        meta = f.metadata()
    assert tensors["decoder"].shape == (N_FEATURES, D_MODEL) and tensors["decoder"].dtype == torch.float32
    # feature i's direction is column i of LlamaScope's decoder.weight
    assert torch.equal(tensors["decoder"][5], checkpoint["decoder.weight"][:, 5].float())
    assert torch.equal(tensors["encoder"][5], checkpoint["encoder.weight"][5].float())
    assert torch.equal(tensors["encoder_bias"], checkpoint["encoder.bias"].float())
    assert torch.equal(tensors["threshold"], torch.full((N_FEATURES,), 0.75))
    assert meta["commit"] == COMMIT and meta["layer"] == "3" and meta["source_dtype"] == "bfloat16"
    assert meta["hook_point_in"] == "blocks.3.hook_resid_post"
    assert json.loads(meta["hyperparams"])["dataset_average_activation_norm"]["in"] == 29.125
    assert ("HEAD", f"/{REPO}/resolve/main/Llama3_1-8B-Base-L3R-32x/checkpoints/final.safetensors") in fake_hub.requests
    assert _leftovers(out.parent) == ["layer3.safetensors"]

    # decoder only, in the checkpoint's dtype
    small = _llamascope(3, tmp_path / "out" / "dec.safetensors", with_encoder=False, dtype=None)
    with safe_open(str(small), framework="pt") as f:
        assert set(f.keys()) == {"decoder", "decoder_bias"} and f.get_tensor("decoder").dtype == torch.bfloat16


def test_llamascope_missing_layer_names_repo_and_file(fake_hub, tmp_path):
    out = tmp_path / "out" / "layer40.safetensors"
    with pytest.raises(DownloadError) as info:
        _llamascope(40, out)
    message = str(info.value)
    assert REPO in message and "Llama3_1-8B-Base-L40R-32x/checkpoints/final.safetensors" in message
    assert "404" in message and "layer" in message
    assert _leftovers(out.parent) == []


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_llamascope_broken_checkpoint(fake_hub, tmp_path, damage):
    body = save(_sae_checkpoint())
    fake_hub.files["Llama3_1-8B-Base-L3R-32x/checkpoints/final.safetensors"] = (
        body[: len(body) // 2] if damage == "truncated" else b"<html>not a safetensors file</html>")
    out = tmp_path / "out" / "layer3.safetensors"
    with pytest.raises(DownloadError, match="final.safetensors.*cannot read the safetensors file"):
        _llamascope(3, out)
    assert _leftovers(out.parent) == []


def test_llamascope_shape_and_key_checks(fake_hub, tmp_path):
    folder = "Llama3_1-8B-Base-L3R-32x"
    fake_hub.files[f"{folder}/checkpoints/final.safetensors"] = save(_sae_checkpoint())
    fake_hub.files[f"{folder}/hyperparams.json"] = json.dumps(_hyperparams(3) | {"d_sae": 32}).encode()
    out = tmp_path / "out" / "layer3.safetensors"
    with pytest.raises(DownloadError, match="n_features should be 32"):
        _llamascope(3, out)
    fake_hub.files[f"{folder}/hyperparams.json"] = json.dumps(_hyperparams(3)).encode()
    # the fake keeps one commit, so each changed file is fetched into a fresh cache
    with pytest.raises(DownloadError, match="d_model should be 4096"):
        _llamascope(3, out, expected_d_model=4096, cache_dir=tmp_path / "cache2")
    fake_hub.files[f"{folder}/checkpoints/final.safetensors"] = save({"encoder.weight": torch.zeros(4, 2)})
    with pytest.raises(DownloadError, match="no decoder tensor"):
        _llamascope(3, out, cache_dir=tmp_path / "cache3")
    assert _leftovers(out.parent) == []


def test_llamascope_from_a_local_copy(tmp_path):
    folder = tmp_path / "copy" / "Llama3_1-8B-Base-L0R-32x"
    (folder / "checkpoints").mkdir(parents=True)
    checkpoint = _sae_checkpoint(seed=1)
    (folder / "checkpoints" / "final.safetensors").write_bytes(save(checkpoint))
    out = download_llamascope_layer(str(tmp_path / "copy"), 0, tmp_path / "l0.safetensors", with_encoder=False)
    with safe_open(str(out), framework="pt") as f:
        assert torch.equal(f.get_tensor("decoder"), checkpoint["decoder.weight"].T.float())
    with pytest.raises(DownloadError, match="L1R-32x/checkpoints/final.safetensors: no such file"):
        download_llamascope_layer(str(tmp_path / "copy"), 1, tmp_path / "l1.safetensors")
    assert not (tmp_path / "l1.safetensors").exists()


# ----------------------------------------------------------------------------------------------
# fake S3 bucket

MODEL, SAE = "llama3.1-8b", "3-llamascope-res-131k"
PREFIX = f"v1/{MODEL}/{SAE}/explanations/"


def _record(index, description, model="gpt-4o-mini", type_name="oai_token-act-pair"):
    record = {"modelId": MODEL, "layer": SAE, "index": index, "description": description, "typeName": type_name}
    if model is not None:
        record["explanationModelName"] = model
    return record


def _gz_jsonl(records) -> bytes:
    return gzip.compress("".join(json.dumps(r) + "\n" for r in records).encode())


def _listing(keys, token=None, prefix=PREFIX) -> bytes:
    contents = "".join(f"<Contents><Key>{escape(k)}</Key><Size>1</Size></Contents>" for k in keys)
    more = f"<IsTruncated>true</IsTruncated><NextContinuationToken>{escape(token)}</NextContinuationToken>" \
        if token else "<IsTruncated>false</IsTruncated>"
    return (f'<?xml version="1.0" encoding="UTF-8"?><ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
            f"<Name>neuronpedia-datasets</Name><Prefix>{escape(prefix)}</Prefix><KeyCount>{len(keys)}</KeyCount>"
            f"<MaxKeys>1000</MaxKeys>{more}{contents}</ListBucketResult>").encode()


@pytest.fixture
def fake_bucket(serve):
    """A bucket whose listing of PREFIX comes in two pages; `objects` maps keys to bodies, `fail` to statuses."""
    state = {"objects": {}, "fail": {}, "pages": None}

    def handle(handler, method):
        url = urllib.parse.urlsplit(handler.path)
        query = urllib.parse.parse_qs(url.query)
        if url.path == "/" and query.get("list-type") == ["2"]:
            prefix = query["prefix"][0]
            keys = sorted(k for k in state["objects"] if k.startswith(prefix))
            pages = state["pages"] or [keys[:2], keys[2:]]
            token = query.get("continuation-token", [None])[0]
            page = 0 if token is None else int(token.removeprefix("page-"))
            more = f"page-{page + 1}" if page + 1 < len(pages) else None
            return _reply(handler, method, 200, _listing(pages[page], more, prefix), {"Content-Type": "application/xml"})
        key = urllib.parse.unquote(url.path.lstrip("/"))
        if state["fail"].get(key):
            status = state["fail"][key].pop(0)
            return _reply(handler, method, status, b"<Error><Code>InternalError</Code></Error>")
        if key not in state["objects"]:
            return _reply(handler, method, 404, b"<Error><Code>NoSuchKey</Code><Message>The specified key does not "
                                                b"exist.</Message></Error>", {"Content-Type": "application/xml"})
        _reply(handler, method, 200, state["objects"][key], {"Content-Type": "application/gzip"})

    server = serve(handle)
    server.state = state
    return server


def _fill(bucket):
    bucket.state["objects"].update({
        PREFIX + "batch-0.jsonl.gz": _gz_jsonl([_record("7", " city names"), _record("2", ""),
                                                _record(3, "numbers", model=None)]),
        PREFIX + "batch-1.jsonl.gz": _gz_jsonl([_record("7", "names of cities", model="claude", type_name=None)]),
        PREFIX + "batch-10.jsonl.gz": _gz_jsonl([_record("100", "the letter q")]),
        PREFIX + "README.txt": b"not an export",
        f"v1/{MODEL}/4-llamascope-res-131k/explanations/batch-0.jsonl.gz": _gz_jsonl([_record("1", "other layer")]),
    })


def _neuronpedia(bucket, out, **kwargs):
    return download_neuronpedia_explanations(MODEL, SAE, out, base_url=bucket.url, timeout=5, backoff=0, **kwargs)


def test_neuronpedia_explanations(fake_bucket, tmp_path, caplog):
    _fill(fake_bucket)
    out = tmp_path / "labels" / "layer3.parquet"
    with caplog.at_level(logging.INFO, logger="introspect.sources.downloads"):
        assert _neuronpedia(fake_bucket, out) == out
    table = pl.read_parquet(out)
    assert table.columns == ["layer", "feature", "description", "explainer_model", "explanation_type"]
    assert table.rows() == [
        (3, 3, "numbers", None, "oai_token-act-pair"),
        (3, 7, "city names", "gpt-4o-mini", "oai_token-act-pair"),
        (3, 7, "names of cities", "claude", None),
        (3, 100, "the letter q", "gpt-4o-mini", "oai_token-act-pair"),
    ]
    assert "dropped 1 explanations with an empty description" in caplog.text
    listings = [path for method, path in fake_bucket.requests if "list-type=2" in path]
    assert len(listings) == 2 and "continuation-token=page-1" in listings[1]
    assert ("GET", "/" + PREFIX + "README.txt") not in fake_bucket.requests
    assert _leftovers(out.parent) == ["layer3.parquet"]

    first = _neuronpedia(fake_bucket, tmp_path / "first.parquet", max_files=2)
    assert pl.read_parquet(first)["feature"].to_list() == [3, 7, 7]  # batch-0 and batch-1, not batch-10


def test_neuronpedia_retries_server_errors(fake_bucket, tmp_path):
    _fill(fake_bucket)
    fake_bucket.state["fail"][PREFIX + "batch-1.jsonl.gz"] = [503, 500]
    out = _neuronpedia(fake_bucket, tmp_path / "l3.parquet", retries=2)
    assert pl.read_parquet(out).height == 4
    fake_bucket.state["fail"][PREFIX + "batch-1.jsonl.gz"] = [503, 503, 503]
    with pytest.raises(DownloadError, match=r"batch-1\.jsonl\.gz: HTTP 503"):
        _neuronpedia(fake_bucket, tmp_path / "l3-again.parquet", retries=2)
    assert not (tmp_path / "l3-again.parquet").exists()


@pytest.mark.parametrize("damage, message", [
    ("missing", r"batch-1\.jsonl\.gz: HTTP 404 \(NoSuchKey\)"),
    ("truncated", r"batch-1\.jsonl\.gz: the gzip file is truncated or corrupt"),
    ("bad json", r"batch-1\.jsonl\.gz line 2: malformed JSON"),
    ("bad index", r"batch-1\.jsonl\.gz line 1: 'index' is 'seven'"),
])
def test_neuronpedia_broken_file(fake_bucket, tmp_path, damage, message):
    _fill(fake_bucket)
    key = PREFIX + "batch-1.jsonl.gz"
    objects = fake_bucket.state["objects"]
    if damage == "missing":
        fake_bucket.state["pages"] = [[PREFIX + "batch-0.jsonl.gz"], [key]]
        del objects[key]
    elif damage == "truncated":
        objects[key] = _gz_jsonl([_record(str(i), f"feature {i}") for i in range(200)])[:-40]
    elif damage == "bad json":
        objects[key] = gzip.compress(json.dumps(_record("1", "fine")).encode() + b'\n{"index": "2", "descr\n')
    else:
        objects[key] = _gz_jsonl([_record("seven", "a word")])
    out = tmp_path / "labels" / "layer3.parquet"
    with pytest.raises(DownloadError, match=message):
        _neuronpedia(fake_bucket, out)
    assert _leftovers(out.parent) == []


def test_neuronpedia_empty_listing(fake_bucket, tmp_path):
    _fill(fake_bucket)
    out = tmp_path / "labels" / "layer9.parquet"
    with pytest.raises(DownloadError, match="nothing found under the prefix 'v1/llama3.1-8b/9-llamascope-res-131k/"):
        download_neuronpedia_explanations(MODEL, "9-llamascope-res-131k", out, base_url=fake_bucket.url, timeout=5)
    assert _leftovers(out.parent) == []
