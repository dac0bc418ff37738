"""What every step shares: the run's context, the environment record each result carries, and the step's outcome."""
from __future__ import annotations

import json
import os
import platform
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

SIMULATE_ENV = "GPU_CHECK_SIMULATE_FAILURE"  # a step name: that step raises at its start (the suite's failure test)


@dataclass(slots=True)
class Context:
    """What a step is told: tiny CPU shapes or the real ones, its scratch folder, the device to run on."""

    smoke: bool
    work: Path
    device: str

    @property
    def cuda(self) -> bool:
        return self.device.startswith("cuda")


@dataclass(slots=True)
class Outcome:
    """A step's measurements, the goals it missed (none: pass) and one line for the table."""

    data: dict
    summary: str
    failures: list[str] = field(default_factory=list)


@dataclass(slots=True)
class StepResult:
    """One row of the final table and its JSON, written even when the step crashed or ran out of time."""

    step: str
    title: str
    status: str                # pass, fail (a goal missed), error (raised or crashed), timeout, skipped
    seconds: float
    summary: str
    environment: dict
    failures: list[str] = field(default_factory=list)
    error: str | None = None
    data: dict = field(default_factory=dict)
    log: str | None = None

    def to_json(self) -> dict:
        return asdict(self)


def environment(device: str) -> dict:
    """Device, driver, torch, CUDA and Triton versions, as vLLM's benchmark scripts state them in every result."""
    import torch
    from hardware import describe

    from budget.probe import probe_gpus

    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    driver, why = nvml_driver()
    # NVML names a GPU without torch creating a CUDA context in the driver (it would hold memory all run long)
    index = int(device.partition(":")[2] or 0)
    gpu = next((g for g in probe_gpus().gpus if g.index == index), None) if device.startswith("cuda") else None
    return {"device": gpu.name if gpu else describe(device), "device_type": "cuda" if device.startswith("cuda") else "cpu",
            "driver": driver, **({"driver_why": why} if why else {}), "torch": torch.__version__,
            "cuda": torch.version.cuda, "triton": triton_version, "python": platform.python_version(),
            "cpu_cores": os.cpu_count()}


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
