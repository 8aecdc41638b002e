"""compute.device resolution: auto, cpu, cuda and cuda:N, and errors that name the job and the settings to change."""

from __future__ import annotations

import pytest
import torch

from introspect.models.loading import resolve_device


@pytest.fixture()
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


@pytest.fixture()
def one_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)


def test_auto_and_cpu(no_cuda):
    assert resolve_device("auto") == "cpu"
    assert resolve_device("cpu", rule="patching_sweep", gpus="patching") == "cpu"


def test_auto_and_cuda_with_a_gpu(one_gpu):
    assert resolve_device("auto") == "cuda"
    assert resolve_device("cuda", rule="hints_run", gpus="hints") == "cuda"
    assert resolve_device("cuda:0") == "cuda:0"


def test_cuda_without_a_gpu_names_the_rule_and_both_settings(no_cuda):
    with pytest.raises(RuntimeError) as err:
        resolve_device("cuda", rule="patching_sweep", gpus="patching")
    message = str(err.value)
    assert message.startswith("rule patching_sweep: compute.device is 'cuda' but torch sees no CUDA device")
    assert "compute.gpus.patching" in message and "set compute.device to 'auto' or 'cpu'" in message


def test_cuda_without_a_gpu_and_without_a_rule_keeps_the_plain_message(no_cuda):
    with pytest.raises(RuntimeError, match=r"^compute\.device is 'cuda' but torch sees no CUDA device\. .*"
                                           r"the job's GPU request"):
        resolve_device("cuda")


def test_a_cuda_index_past_the_visible_gpus(one_gpu):
    with pytest.raises(RuntimeError, match=r"rule features_sae: compute\.device is 'cuda:2' but torch sees 1 CUDA "
                                           r"device\(s\) \(cuda:0\.\.cuda:0\).*compute\.gpus\.features"):
        resolve_device("cuda:2", rule="features_sae", gpus="features")
