"""A stack's CUDA indices against the machine's cards: through CUDA_VISIBLE_DEVICES, for NVML and for each worker.

NVML numbers every card of the machine; CUDA numbers the visible ones, in CUDA_VISIBLE_DEVICES's order. A stack's
`device: N` is CUDA's N as the orchestrator sees it. A worker is given only its card, so inside it the card is
cuda:0, and CUDA_DEVICE_ORDER=PCI_BUS_ID (unless set) makes CUDA's order NVML's, so both name the same card.
"""
from __future__ import annotations

import os
from collections.abc import Mapping

VISIBLE, ORDER = "CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER"


def _visible(environ: Mapping[str, str]) -> list[str] | None:
    value = environ.get(VISIBLE)
    return None if value is None else [part.strip() for part in value.split(",") if part.strip()]


def nvml_index(cuda_index: int, environ: Mapping[str, str] = os.environ) -> int:
    """The NVML index of CUDA device `cuda_index` here (itself when every card is visible or the entry is a UUID)."""
    visible = _visible(environ)
    if visible is None or cuda_index >= len(visible) or not visible[cuda_index].isdigit():
        return cuda_index
    return int(visible[cuda_index])


def worker_env(device: str, environ: Mapping[str, str] = os.environ) -> tuple[dict[str, str], str]:
    """(variables to set, device to use) for a worker on `device`: it sees only that card, as cuda:0."""
    if not device.startswith("cuda"):
        return {}, device
    index = int(device.partition(":")[2] or 0)
    visible = _visible(environ)
    if visible is not None and index >= len(visible):
        raise ValueError(f"device {index} is not visible here: {VISIBLE}={environ[VISIBLE]!r} shows "
                         f"{len(visible)} card(s), numbered from 0; set the model's device to one of them")
    card = visible[index] if visible is not None else str(index)
    return {VISIBLE: card, ORDER: environ.get(ORDER, "PCI_BUS_ID")}, "cuda:0"
