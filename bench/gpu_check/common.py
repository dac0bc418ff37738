"""What every step shares: the run's context, the environment record each result carries, and the step's outcome."""
from __future__ import annotations

import importlib.util
import json
import os
import platform
import re
import shutil
import sys
import sysconfig
from dataclasses import asdict, dataclass, field
from pathlib import Path

SIMULATE_ENV = "GPU_CHECK_SIMULATE_FAILURE"  # a step name: that step raises at its start (the suite's failure test)
TAIL_BYTES = 2048  # of each step's log, in its row


class Skipped(Exception):
    """A step (or part of one) this machine cannot run, and why: a package its image lacks and nobody carried."""


def missing(*modules: str) -> list[str]:
    """The modules of these that cannot be imported here (found without importing them)."""
    return [m for m in modules if importlib.util.find_spec(m) is None]


# What each capability needs that an offline GPU host's image lacks and the carried wheels leave out (too large)
NEEDS = {"asr": ("ctranslate2", "faster_whisper", "av"), "vad": ("silero_vad",), "piper": ("piper",),
         "realtime": ("av", "openai", "websockets"), "speech": ("av",)}


def unavailable(capability: str) -> str | None:
    """Why this machine cannot run a capability (None: it can)."""
    gone = missing(*NEEDS[capability])
    if capability == "speech" and shutil.which("espeak-ng") is None:
        gone.append("the espeak-ng command")
    return f"{', '.join(gone)} not here (not in the image; too large to carry)" if gone else None


@dataclass(slots=True)
class Context:
    """What a step is told: tiny CPU shapes or the real ones, its scratch folder, the device to run on."""

    smoke: bool
    work: Path
    device: str
    step: str = ""

    @property
    def cuda(self) -> bool:
        return self.device.startswith("cuda")

    def progress(self, data: dict) -> None:
        """What the step has measured so far: kept in its row if its time box ends before it does."""
        write_json(partial_path(self.work, self.step), data)


def partial_path(work: Path, step: str) -> Path:
    return work / f"partial-{step}.json"


@dataclass(slots=True)
class Outcome:
    """A step's measurements, the goals it missed (none: pass) and one line for the table."""

    data: dict
    summary: str
    failures: list[str] = field(default_factory=list)


@dataclass(slots=True)
class StepResult:
    """One row of the table and of the JSON (whose environment record is the run's), written even when the step
    crashed or ran out of time."""

    step: str
    title: str
    status: str                # pass, fail (a goal missed), error (raised or crashed), timeout, skipped
    seconds: float
    summary: str
    failures: list[str] = field(default_factory=list)
    error: str | None = None
    data: dict = field(default_factory=dict)
    log: str | None = None
    traceback: str | None = None
    log_tail: str = ""         # the last 2 KB of the step's log

    def to_json(self) -> dict:
        return asdict(self)


def environment(device: str) -> dict:
    """Device, driver, torch, CUDA and Triton versions (as vLLM's benchmark scripts state them in every result), and
    on a GPU what else the card holds: free memory and the other processes, read from NVML without creating a CUDA
    context (it would hold memory all run long)."""
    import torch
    from hardware import describe

    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    driver, why = nvml_driver()
    index = int(device.partition(":")[2] or 0)
    gpu = card(index) if device.startswith("cuda") else None
    return {"device": gpu["name"] if gpu else describe(device),
            "device_type": "cuda" if device.startswith("cuda") else "cpu",
            "driver": driver, **({"driver_why": why} if why else {}), "torch": torch.__version__,
            "cuda": torch.version.cuda, "triton": triton_version, "python": platform.python_version(),
            "python_executable": sys.executable, "cpu_cores": os.cpu_count(),
            "onnxruntime": onnxruntime_providers(), **({"gpu": gpu} if gpu else {}),
            "carried_wheels": carried(), "compiler": shutil.which(os.environ.get("CC", "cc")),
            "python_h": python_header()}


def card(index: int) -> dict | None:
    """NVML's view of one GPU: name, total and free bytes, and every process on it (PID, bytes, command)."""
    try:
        import pynvml
        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001  (no library, no driver: nothing to say)
        return None
    try:
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
        name = pynvml.nvmlDeviceGetName(handle)
        processes = []
        for getter in ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses"):
            try:
                for proc in getattr(pynvml, getter)(handle):
                    processes.append({"pid": proc.pid, "bytes": proc.usedGpuMemory, "command": command(proc.pid)})
            except pynvml.NVMLError:
                pass
        return {"index": index, "name": name.decode() if isinstance(name, bytes) else name, "total_bytes": mem.total,
                "free_bytes": mem.free, "used_bytes": mem.used, "processes": processes,
                "processes_note": "NVML lists no PID here, and a container or gVisor may hide them: used_bytes "
                                  "counts what others hold" if not processes else None}
    except pynvml.NVMLError as exc:
        return {"index": index, "error": f"NVML: {exc}"}
    finally:
        pynvml.nvmlShutdown()


def command(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()[:200]
    except OSError:
        return None   # another PID namespace (a container): NVML sees the host's PIDs


def onnxruntime_providers() -> dict:
    """onnxruntime's version and the execution providers this build has (the image's is a CPU build)."""
    try:
        import onnxruntime
    except ImportError as exc:
        return {"error": str(exc)}
    return {"version": onnxruntime.__version__, "providers": onnxruntime.get_available_providers()}


def carried() -> list[str]:
    """The wheels gpu-check.sh installed from .whl/ for this run (name-version), if any."""
    site = os.environ.get("GPU_CHECK_SITE")
    if not site or not Path(site).is_dir():
        return []
    return sorted(p.name.removesuffix(".dist-info") for p in Path(site).glob("*.dist-info"))


def python_header() -> str | None:
    """Python.h, which Triton's launcher is compiled against on a GPU."""
    path = Path(sysconfig.get_paths()["include"]) / "Python.h"
    return str(path) if path.is_file() else None


def nvml_driver() -> tuple[str | None, str | None]:
    """The NVIDIA driver's version from NVML, or why there is none."""
    try:
        import pynvml
        pynvml.nvmlInit()
    except Exception as exc:  # noqa: BLE001  (no library, no driver: both mean "none here")
        return None, f"no NVIDIA driver here ({type(exc).__name__}: {exc})"
    try:
        version = pynvml.nvmlSystemGetDriverVersion()
        return (version.decode() if isinstance(version, bytes) else version), None
    finally:
        pynvml.nvmlShutdown()


def result_name(env: dict, smoke: bool) -> str:
    """bench/results/gpu-<device>.json on a GPU; a separate name for the smoke run, so it never overwrites those."""
    if smoke:
        return "gpu-smoke-cpu"
    return "gpu-" + re.sub(r"[^a-z0-9]+", "-", env["device"].lower()).strip("-")


def write_json(path: Path, data: dict) -> None:
    """Write beside, then rename: a reader (or a killed run) never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(path.suffix + ".partial")
    partial.write_text(json.dumps(data, indent=2, default=str) + "\n")
    partial.replace(path)


def percent_error(estimate: int | None, measured: int | None) -> float | None:
    """(estimate - measured) / measured in percent; None where either side is missing or nothing was measured."""
    if estimate is None or not measured:
        return None
    return round(100 * (estimate - measured) / measured, 1)
