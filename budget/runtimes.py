"""What this machine's runtimes can run on, for plan notes: a model planned on a card its runtime cannot reach here
would run on the CPU (onnxruntime falls back silently) while the plan holds card memory for it."""
from __future__ import annotations

import functools
import importlib.util


@functools.cache
def onnxruntime_has_cuda() -> bool | None:
    """Whether the installed onnxruntime has its CUDA provider (None: onnxruntime is not installed here)."""
    if importlib.util.find_spec("onnxruntime") is None:
        return None
    import onnxruntime

    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()


def runtime_notes(name: str, runtime: str, device: str) -> list[str]:
    """Notes for a model of `runtime` planned on `device`, about running it on this machine."""
    if runtime == "onnxruntime" and device.startswith("cuda") and onnxruntime_has_cuda() is False:
        return [f"{name}: this machine's onnxruntime has no CUDA provider (its CPU build is installed), so run "
                "refuses it on a card here; install onnxruntime-gpu, or set its device: cpu"]
    return []
