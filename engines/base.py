"""The lifecycle every engine kind shares, so one supervisor can start, measure and stop any of them."""
from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import ClassVar


@dataclass(slots=True, frozen=True)
class MemoryUsage:
    device: str            # "cuda:0" or "cpu"
    allocated: int         # bytes torch's allocator holds for tensors now (0 where torch does not allocate)
    peak_allocated: int    # the allocator's high-water mark since load (warmup sets it)
    process: int | None    # what the whole process holds (None: nothing here can see it), from `source`
    source: str = "rss"    # MemorySource's value: which measurement `process` is


class MemorySource(StrEnum):
    """Where a process's figure came from, best first: NVML per PID (blind in containers and gVisor, where NVML lists
    host PIDs or none), the card's used memory since the worker's baseline, torch's reserved bytes (a floor: no
    context, no other runtime), the resident set on CPU."""
    NVML = "nvml per process"
    CARD_DELTA = "card used since start"
    TORCH_RESERVED = "torch reserved (floor)"
    RSS = "rss"
    UNKNOWN = "unknown"


class Engine(ABC):
    """load() → warmup() → serve → close(); memory() at any point. An engine knows nothing about HTTP."""

    kind: ClassVar[str]
    device: str

    @abstractmethod
    def load(self) -> None:
        """Read the weights onto the device; errors name the model and the fix."""

    @abstractmethod
    def warmup(self) -> None:
        """Run the largest shape the stack allows once, so the peak is measured, not guessed."""

    def memory(self) -> MemoryUsage:
        return measure_memory(self.device)

    @abstractmethod
    def close(self) -> None:
        """Free what load() took; safe to call twice."""


def measure_memory(device: str) -> MemoryUsage:
    """Allocator figures from torch when it is loaded; the process's footprint from the best source that sees it."""
    import sys

    allocated = peak = 0
    torch = sys.modules.get("torch")
    if not device.startswith("cuda"):
        return MemoryUsage(device, 0, 0, _rss_bytes(), MemorySource.RSS)
    torch_on = torch is not None and torch.cuda.is_initialized()
    if torch_on:
        allocated, peak = torch.cuda.memory_allocated(device), torch.cuda.max_memory_allocated(device)
    index = _nvml_index(device)
    if (nvml := _nvml_process_bytes(index)) is not None:
        return MemoryUsage(device, allocated, peak, nvml, MemorySource.NVML)
    if (delta := _card_delta(index)) is not None:
        return MemoryUsage(device, allocated, peak, delta, MemorySource.CARD_DELTA)
    if torch_on:
        return MemoryUsage(device, allocated, peak, torch.cuda.memory_reserved(device), MemorySource.TORCH_RESERVED)
    return MemoryUsage(device, allocated, peak, None, MemorySource.UNKNOWN)


_baseline_used: dict[int, int] = {}  # NVML index -> the card's used bytes before this process loaded anything


def mark_baseline(device: str) -> None:
    """Note the card's used memory now (NVML's device figure, which needs no CUDA context), before loading: what
    the card uses later beyond it is this process's, while the supervisor starts workers one at a time."""
    if device.startswith("cuda"):
        index = _nvml_index(device)
        if (card := _card(index)) is not None:
            _baseline_used[index] = card.used_bytes


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _nvml_index(device: str) -> int:
    from budget.devices import nvml_index

    return nvml_index(int(device.partition(":")[2] or 0))  # a worker's cuda:0 is the card it was given


def _card(index: int):
    from budget.probe import probe_gpus

    return next((g for g in probe_gpus().gpus if g.index == index), None)


def _nvml_process_bytes(index: int) -> int | None:
    """NVML's bytes for this PID; None where NVML does not list it or cannot say (0 too: a context alone is more)."""
    card = _card(index)
    return (card.processes.get(os.getpid()) or None) if card is not None else None


def _card_delta(index: int) -> int | None:
    if index not in _baseline_used or (card := _card(index)) is None:
        return None
    return max(0, card.used_bytes - _baseline_used[index])


def local_model_dir(spec, fix: str = "download it, or point path at its folder") -> Path:
    """The model's folder (or GGUF file) on this machine; a model known only by its shipped config can be planned, not
    served."""
    from budget.model_files import find_model_files

    files = find_model_files(spec.name, spec.path, None)
    if files.config_only:
        raise ValueError(f"model {spec.name!r}: {spec.path} is not on this machine (only its shipped config is); {fix}")
    return Path(files.file or files.directory)


def spec_device(spec) -> str | None:
    """The device a stack entry names, in torch's spelling; None lets the engine choose."""
    if spec.device is None:
        return None
    return "cpu" if spec.device == "cpu" else f"cuda:{spec.device}"
