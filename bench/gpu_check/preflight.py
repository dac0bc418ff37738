"""What the check needs before its first step, each with what to do when it is missing: the packages its steps
import, CUDA (on a GPU), a C compiler and Python.h (Triton compiles its launcher with them on first use), free GPU
memory, and room for the real-size models. Problems stop the run before any step (exit 3): a window on a lent GPU
is better spent on a rerun than on steps that cannot pass."""
from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from bench.gpu_check.common import missing, python_header

# Imported by the steps every machine runs; the carried wheels (scripts/gpu-wheels.sh) bring the ones an image lacks
REQUIRED = ("torch", "triton", "transformers", "sentence_transformers", "safetensors", "tokenizers", "numpy", "yaml",
            "rich", "psutil", "pynvml", "pytest", "fastapi", "starlette", "uvicorn", "pydantic", "websockets",
            "multipart", "jsonschema", "llguidance", "gguf", "httpx", "httpx2")
FREE_GIB = 40     # Qwen3-8B in bf16 (15.3 GiB) with a 32k-token KV cache and activations, and the 24 GiB stack
WORK_GIB = 20     # the real-size models on disk: the 8B checkpoint (16.4 GB), VITS, MiniLM


@dataclass(slots=True)
class Preflight:
    problems: list[str] = field(default_factory=list)


def check(cuda: bool, work: Path, gpu: dict | None) -> Preflight:
    out = Preflight()
    gone = missing(*REQUIRED)
    if gone:
        out.problems.append(f"Python packages missing: {', '.join(gone)}. On a machine with PyPI run "
                            "scripts/gpu-wheels.sh and carry .whl/ with the tree (gpu-check.sh installs it), or "
                            "make .venv with scripts/setup.sh")
    if not cuda:
        return out
    import torch

    if not torch.cuda.is_available():  # counts devices without creating a context
        out.problems.append(f"nvidia-smi sees a GPU but torch {torch.__version__} does not (CUDA build: "
                            f"{torch.version.cuda or 'none, a CPU build'}); the driver may be older than this build "
                            "needs")
    compiler = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if compiler is None:
        out.problems.append("no C compiler (cc, gcc or clang) on PATH: Triton compiles its CUDA launcher with one")
    if python_header() is None:
        out.problems.append("Python.h is missing (the python3-dev headers): Triton compiles its launcher against it")
    if gpu is None or "error" in gpu:
        out.problems.append(f"NVML cannot read the GPU ({gpu['error'] if gpu else 'no NVIDIA driver library found'}):"
                            " the free memory and the other processes are unknown")
    elif gpu["free_bytes"] < FREE_GIB * 2**30:
        others = ", ".join(f"PID {p['pid']} {p['bytes'] or 0:,} B ({p['command'] or 'not visible here'})"
                           for p in gpu["processes"]) or "none that NVML can name"
        out.problems.append(f"only {gpu['free_bytes'] / 2**30:.1f} GiB of {gpu['total_bytes'] / 2**30:.1f} GiB free on "
                            f"the GPU; the check needs {FREE_GIB} GiB. Other processes: {others}")
    free = shutil.disk_usage(work).free
    if free < WORK_GIB * 2**30:
        out.problems.append(f"{work} has {free / 2**30:.1f} GiB free; the real-size models need {WORK_GIB} GiB "
                            "(--work DIR picks another folder)")
    return out
