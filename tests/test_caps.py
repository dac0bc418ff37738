"""A worker is capped in its runtime's terms, and only a torch worker touches torch's CUDA (a context is ~0.5 GB)."""
from __future__ import annotations

import os

import pytest
import torch

from budget import caps
from budget.probe import GpuInfo, ProbeResult
from budget.units import GiB, MiB


@pytest.fixture
def card(monkeypatch):
    """An 80 GiB card NVML sees; torch's CUDA calls are recorded instead of run (there is no GPU here)."""
    calls = []
    monkeypatch.setattr("budget.probe.probe_gpus", lambda: ProbeResult([GpuInfo(0, "card", 80 * GiB, 80 * GiB, 0)]))
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda *a: calls.append("get_device_properties"))
    monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction", lambda f, i: calls.append(("fraction", f)))
    for name in ("CT2_CUDA_ALLOCATOR", "CT2_CUDA_CACHING_ALLOCATOR_CONFIG", caps.SHARE_ENV):
        monkeypatch.delenv(name, raising=False)
    yield calls
    for name in ("CT2_CUDA_ALLOCATOR", "CT2_CUDA_CACHING_ALLOCATOR_CONFIG", caps.SHARE_ENV):
        os.environ.pop(name, None)


@pytest.mark.parametrize("runtime", ["ctranslate2", "onnxruntime"])
def test_ctranslate2_and_onnxruntime_workers_never_touch_torch_cuda(card, runtime):
    """Failed before the fix: every GPU worker asked torch for the card's properties and set a fraction, creating a
    CUDA context in CTranslate2 and onnxruntime workers where the torch cap limits nothing."""
    caps.apply_cap("cuda:0", 2 * GiB, runtime)
    assert card == []
    assert os.environ[caps.SHARE_ENV] == str(2 * GiB)


def test_ctranslate2_gets_its_caching_allocator_with_a_small_cache(card):
    """Failed before the fix: the cache bound was the whole share (2 GiB of freed blocks kept beside live ones)."""
    said = caps.apply_cap("cuda:0", 2 * GiB, "ctranslate2")
    assert os.environ["CT2_CUDA_ALLOCATOR"] == "cub_caching"
    assert os.environ["CT2_CUDA_CACHING_ALLOCATOR_CONFIG"] == f"4,3,12,{64 * MiB}"
    assert "cannot be capped" in said


def test_torch_worker_fraction_comes_from_nvml_total(card):
    caps.apply_cap("cuda:0", 8 * GiB, "torch")
    assert card == [("fraction", 0.1)]
