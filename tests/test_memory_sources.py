"""Where NVML cannot see a process (containers, gVisor: it lists host PIDs, or no bytes), its memory is measured
another way and says how, or is "unknown": never a silent 0."""
from __future__ import annotations

import os
from types import SimpleNamespace

import pytest

import engines.base as base
from budget import probe
from budget.units import GiB


@pytest.fixture
def card(monkeypatch):
    """One card whose NVML view the test sets: `used` bytes in all, `processes` PID -> bytes."""
    state = {"used": 1 * GiB, "processes": {}}
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(base, "_baseline_used", {})
    monkeypatch.setattr(probe, "probe_gpus", lambda: probe.ProbeResult([probe.GpuInfo(
        0, "card", 80 * GiB, 80 * GiB - state["used"], state["used"], dict(state["processes"]))]))
    return state


def test_nvml_per_process_when_it_sees_us(card):
    card["processes"] = {os.getpid(): 3 * GiB}
    usage = base.measure_memory("cuda:0")
    assert (usage.process, usage.source) == (3 * GiB, base.MemorySource.NVML)


def test_container_pids_fall_back_to_the_cards_used_memory_since_start(card):
    """Failed before the fix: NVML listed only a host PID, so this process measured 0 B and passed its share check."""
    base.mark_baseline("cuda:0")
    card["used"], card["processes"] = 5 * GiB, {123456: 4 * GiB}
    usage = base.measure_memory("cuda:0")
    assert (usage.process, usage.source) == (4 * GiB, base.MemorySource.CARD_DELTA)


def test_nothing_sees_it_is_unknown_not_zero(card):
    card["processes"] = {os.getpid(): None}
    usage = base.measure_memory("cuda:0")
    assert (usage.process, usage.source) == (None, base.MemorySource.UNKNOWN)


def test_nvml_without_a_figure_is_none(monkeypatch):
    """Failed before the fix: NVML's "not available" (None) was summed as 0."""
    class NVMLError(Exception):
        pass

    procs = [SimpleNamespace(pid=7, usedGpuMemory=None), SimpleNamespace(pid=8, usedGpuMemory=5)]
    fake = SimpleNamespace(NVMLError=NVMLError, nvmlDeviceGetComputeRunningProcesses=lambda h: procs,
                           nvmlDeviceGetGraphicsRunningProcesses=lambda h: [])
    assert probe._process_memory(fake, None) == {7: None, 8: 5}
