"""The lifecycle every engine kind shares, so one supervisor can start, measure and stop any of them."""
from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar


@dataclass(slots=True, frozen=True)
class MemoryUsage:
    device: str            # "cuda:0" or "cpu"
    allocated: int         # bytes torch's allocator holds for tensors now (0 where torch does not allocate)
    peak_allocated: int    # the allocator's high-water mark since load (warmup sets it)
    process: int           # what the whole process holds: NVML per PID on a GPU, resident set size on CPU


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
    """Allocator figures from torch when it is loaded, the process's own footprint from NVML or /proc."""
    import sys

    allocated = peak = 0
    torch = sys.modules.get("torch")
    on_cuda = device.startswith("cuda")
    if on_cuda and torch is not None and torch.cuda.is_initialized():
        allocated, peak = torch.cuda.memory_allocated(device), torch.cuda.max_memory_allocated(device)
    process = _nvml_process_bytes(device) if on_cuda else None
    return MemoryUsage(device, allocated, peak, process if process is not None else _rss_bytes())


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _nvml_process_bytes(device: str) -> int | None:
    from budget.devices import nvml_index
    from budget.probe import probe_gpus

    index = nvml_index(int(device.partition(":")[2] or 0))  # a worker's cuda:0 is the card it was given
    gpus = {g.index: g for g in probe_gpus().gpus}
    return gpus[index].processes.get(os.getpid(), 0) if index in gpus else None


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
