"""What the machine really has: NVML for GPUs (total, free, per-process use), /proc for host memory."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


@dataclass(slots=True)
class GpuInfo:
    """One device as NVML sees it now."""

    index: int
    name: str
    total_bytes: int
    free_bytes: int
    used_bytes: int
    processes: dict[int, int | None] = field(default_factory=dict)  # PID -> bytes (None: NVML cannot say)
    compute_capability: tuple[int, int] | None = None


@dataclass(slots=True)
class ProbeResult:
    """Every device found, or why none was."""

    gpus: list[GpuInfo]
    error: str | None = None


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def probe_gpus() -> ProbeResult:
    """Ask NVML for every device; without a GPU or driver this says so instead of raising."""
    try:
        import pynvml
    except ImportError:
        return ProbeResult([], "nvidia-ml-py is not installed, so NVML cannot be asked")
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        return ProbeResult([], f"no NVIDIA driver or GPU found (NVML: {exc})")
    try:
        gpus = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
            gpus.append(GpuInfo(index, _text(pynvml.nvmlDeviceGetName(handle)), mem.total, mem.free, mem.used,
                                _process_memory(pynvml, handle), _capability(pynvml, handle)))
        return ProbeResult(gpus, None if gpus else "NVML found no GPU")
    except pynvml.NVMLError as exc:
        return ProbeResult([], f"NVML failed while reading devices: {exc}")
    finally:
        pynvml.nvmlShutdown()


def _capability(pynvml, handle) -> tuple[int, int] | None:
    """CUDA's compute capability of the card (fp8 e4m3 needs 8.9), or None where NVML cannot say."""
    try:
        return tuple(pynvml.nvmlDeviceGetCudaComputeCapability(handle))
    except pynvml.NVMLError:
        return None


def _process_memory(pynvml, handle) -> dict[int, int | None]:
    """Bytes used per PID on one device (compute and graphics contexts); None where NVML has no figure (in containers
    and gVisor it lists host PIDs, or none, or no bytes: callers must not read a missing PID as 0)."""
    used: dict[int, int | None] = {}
    for getter in ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses"):
        try:
            for proc in getattr(pynvml, getter)(handle):
                if proc.usedGpuMemory is None or used.get(proc.pid, 0) is None:
                    used[proc.pid] = None
                else:
                    used[proc.pid] = used.get(proc.pid, 0) + proc.usedGpuMemory
        except pynvml.NVMLError as exc:
            log.debug("NVML %s failed: %s", getter, exc)
    return used


def host_memory_bytes() -> int:
    """Physical RAM, the budget of a stack whose device is `cpu`."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
