"""Hold a worker to its share before it loads anything: torch's per-process fraction, CTranslate2's cache limit.

Imported only inside workers; torch is imported here lazily so the planner never needs it.
"""
from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)
SHARE_ENV = "ORCH_SHARE_BYTES"


def apply_cap(device: str, share_bytes: int, ct2_cache: bool = False) -> str:
    """Cap this process on its GPU; returns what was done, for the worker's log. On CPU nothing can be capped.

    torch's fraction is of the physical card, which is larger than the planned total when a stack is planned
    smaller than its card (`--gpu-memory 24GiB` on an H200), so the fraction comes from the card itself."""
    if not device.startswith("cuda") or share_bytes <= 0:
        return "no cap (CPU: measured, not capped)"
    os.environ[SHARE_ENV] = str(share_bytes)  # for runtimes capped by bytes (onnxruntime's gpu_mem_limit)
    if ct2_cache:  # CTranslate2 allocates outside torch: bound what its caching allocator may keep
        os.environ.setdefault("CT2_CUDA_CACHING_ALLOCATOR_CONFIG", f"4,3,12,{share_bytes}")
    import torch

    index = torch.device(device).index or 0
    fraction = min(1.0, share_bytes / torch.cuda.get_device_properties(index).total_memory)
    torch.cuda.set_per_process_memory_fraction(fraction, index)
    ct2 = ", CTranslate2 cache at the share" if ct2_cache else ""
    return f"torch capped at {fraction:.3f} of cuda:{index}{ct2}"
