"""One onnxruntime session for an ONNX voice (Piper, Kokoro): on a card the CUDA provider's arena is held to the
worker's share; on the CPU the session takes the worker's share of the cores."""
from __future__ import annotations

import os
from pathlib import Path

from budget.caps import SHARE_ENV  # set by the worker on a GPU: the plan's share, the session's arena limit


def open_session(path: Path, device: str, cuda: bool, cpu_fallback: bool, what: str, fix: str):
    """An InferenceSession on CUDA (when `cuda`; with the CPU after it when `cpu_fallback`) or the CPU; a file
    onnxruntime cannot load is a ValueError naming `what` and the `fix`."""
    import onnxruntime

    if cuda:
        options = {"device_id": int(device.partition(":")[2] or 0), "cudnn_conv_algo_search": "HEURISTIC",
                   "arena_extend_strategy": "kSameAsRequested"}
        if share := int(os.environ.get(SHARE_ENV, "0")):
            options["gpu_mem_limit"] = share
        providers = [("CUDAExecutionProvider", options)] + (["CPUExecutionProvider"] if cpu_fallback else [])
    else:
        providers = ["CPUExecutionProvider"]
    session_options = onnxruntime.SessionOptions()
    if threads := int(os.environ.get("OMP_NUM_THREADS", "0")):  # the worker's share of the cores
        session_options.intra_op_num_threads = threads
    try:
        return onnxruntime.InferenceSession(str(path), sess_options=session_options, providers=providers)
    except Exception as exc:  # onnxruntime's own error for a truncated or foreign file
        raise ValueError(f"onnxruntime cannot load the {what} {path} ({exc}); {fix}") from None
