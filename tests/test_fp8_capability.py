"""fp8 e4m3 needs compute capability 8.9: below it (RTX 3090, A10G, A100) the plan and the engine refuse it by name,
and a KV cache asked for as plain `fp8` is held as e5m2 (the same bytes)."""
from __future__ import annotations

import pytest
import torch

from budget.target import plan_stack_cards
from engines.llm.config import EngineConfig
from orchestrator.stack_file import load_stack
from tests.conftest import CONFIGS


def stack_with_kv(kv_cache_dtype: str):
    stack = load_stack(CONFIGS / "vtuber-24gb.yaml")
    stack.models[0].kv_cache_dtype = kv_cache_dtype
    return stack


@pytest.mark.parametrize("gpu", ["rtx-3090", "a10g"])
def test_plan_refuses_e4m3_kv_below_8_9(gpu):
    """Failed before the fix: the 24 GB stack with an e4m3 KV cache fitted an RTX 3090, whose Triton cannot compile
    the e4m3 conversions."""
    plan = plan_stack_cards(stack_with_kv("fp8_e4m3"), gpu_preset=gpu)
    assert not plan.fits
    (problem,) = [p for p in plan.cards[0].problems if "kv_cache_dtype" in p]
    assert "kv_cache_dtype fp8_e4m3 needs compute capability 8.9" in problem and "is 8.6" in problem
    assert "fp8_e5m2" in problem


def test_plain_fp8_kv_is_e5m2_below_8_9_and_e4m3_above():
    below, above = (plan_stack_cards(stack_with_kv("fp8"), gpu_preset=gpu) for gpu in ("rtx-3090", "rtx-4090"))
    assert below.fits and above.fits
    assert any("held as fp8_e5m2" in note for note in below.cards[0].notes)
    assert not any("e5m2" in note for note in above.cards[0].notes)
    assert plan_stack_cards(stack_with_kv("fp8_e4m3"), gpu_preset="rtx-4090").fits


@pytest.mark.parametrize("capability, kv, want", [((8, 6), "fp8", torch.float8_e5m2),
                                                  ((8, 9), "fp8", torch.float8_e4m3fn),
                                                  ((9, 0), "fp8_e4m3", torch.float8_e4m3fn),
                                                  ((8, 0), "fp8_e5m2", torch.float8_e5m2)])
def test_engine_kv_dtype_by_capability(monkeypatch, capability, kv, want):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert EngineConfig("m", kv_cache_dtype=kv, num_kv_blocks=1, device="cuda").kv_torch_dtype({}) == want


def test_engine_refuses_e4m3_kv_below_8_9(monkeypatch):
    """Failed before the fix: the pool was made e4m3 and the first step's kernel compile failed on an RTX 3090."""
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 6))
    with pytest.raises(ValueError, match="fp8_e4m3 needs compute capability 8.9 .* this card is 8.6"):
        EngineConfig("m", kv_cache_dtype="fp8_e4m3", num_kv_blocks=1, device="cuda").kv_torch_dtype({})
