"""Hold a worker to its share before it loads anything, in the terms its runtime has.

torch: the caching allocator's per-process fraction (a hard cap). CTranslate2: its allocator set explicitly to the
caching one with a small cache; its live memory cannot be capped, only measured. onnxruntime: the share as the CUDA
provider's arena limit (read by the engines from SHARE_ENV). Only a torch worker touches torch's CUDA: creating its
context (~0.5 GB) in a CTranslate2 or onnxruntime worker would cost memory and cap nothing. The card's total comes
from NVML. Imported only inside workers; torch is imported lazily so the planner never needs it.
"""
from __future__ import annotations

import logging
import os

from budget.units import MiB, human

log = logging.getLogger(__name__)
SHARE_ENV = "ORCH_SHARE_BYTES"
CT2_CACHE_BYTES = 64 * MiB  # freed blocks CTranslate2 may keep for reuse; the rest goes back to the driver


def apply_cap(device: str, share_bytes: int, runtime: str = "torch") -> str:
    """Cap this process on its GPU; returns what was done, for the worker's log. On CPU nothing can be capped.

    torch's fraction is of the physical card, which is larger than the planned total when a stack is planned
    smaller than its card (`--gpu-memory 24GiB` on an H200), so the fraction comes from the card itself."""
    if not device.startswith("cuda") or share_bytes <= 0:
        return "no cap (CPU: measured, not capped)"
    os.environ[SHARE_ENV] = str(share_bytes)
    if runtime == "ctranslate2":
        os.environ.setdefault("CT2_CUDA_ALLOCATOR", "cub_caching")
        os.environ.setdefault("CT2_CUDA_CACHING_ALLOCATOR_CONFIG", f"4,3,12,{min(CT2_CACHE_BYTES, share_bytes)}")
        return (f"CTranslate2: caching allocator keeping at most {human(min(CT2_CACHE_BYTES, share_bytes))} of freed "
                "blocks; its live memory cannot be capped, only measured against the share")
    if runtime != "torch":
        return f"{runtime}: the share ({human(share_bytes)}) is its arena limit"
    import torch

    index = torch.device(device).index or 0
    fraction = min(1.0, share_bytes / card_total_bytes(index))
    torch.cuda.set_per_process_memory_fraction(fraction, index)
    return f"torch capped at {fraction:.3f} of cuda:{index}"


def card_total_bytes(cuda_index: int) -> int:
    """The card's memory as NVML reports it (no CUDA context needed); torch's figure where NVML cannot say."""
    from budget.devices import nvml_index
    from budget.probe import probe_gpus

    index = nvml_index(cuda_index)
    card = next((g for g in probe_gpus().gpus if g.index == index), None)
    if card is not None:
        return card.total_bytes
    import torch

    return torch.cuda.get_device_properties(cuda_index).total_memory
