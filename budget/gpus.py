"""Cards a user can plan for without owning them: total memory as the driver reports it."""
from __future__ import annotations

from dataclasses import dataclass

from budget.units import MiB


@dataclass(frozen=True, slots=True)
class GpuPreset:
    """One card model; `total_bytes` is NVML's memory total (nvidia-smi's "Total", in MiB)."""

    name: str
    label: str
    total_bytes: int
    compute_capability: tuple[int, int] | None = None  # CUDA's (major, minor): fp8 e4m3 needs (8, 9)


# nvidia-smi "FB Memory Usage / Total" on each card; NVML's total is the same figure in bytes.
PRESETS: dict[str, GpuPreset] = {
    p.name: p
    for p in (
        GpuPreset("rtx-3090", "NVIDIA GeForce RTX 3090 (24 GB)", 24576 * MiB, (8, 6)),
        GpuPreset("rtx-4090", "NVIDIA GeForce RTX 4090 (24 GB)", 24564 * MiB, (8, 9)),
        GpuPreset("rtx-4080", "NVIDIA GeForce RTX 4080 (16 GB)", 16376 * MiB, (8, 9)),
        GpuPreset("rtx-4060ti-16", "NVIDIA GeForce RTX 4060 Ti (16 GB)", 16380 * MiB, (8, 9)),
        GpuPreset("rtx-3060", "NVIDIA GeForce RTX 3060 (12 GB)", 12288 * MiB, (8, 6)),  # nominal: not read off a card
        GpuPreset("rtx-4070", "NVIDIA GeForce RTX 4070 (12 GB)", 12282 * MiB, (8, 9)),  # nominal: not read off a card
        GpuPreset("l4", "NVIDIA L4 (24 GB)", 23034 * MiB, (8, 9)),
        GpuPreset("a10g", "NVIDIA A10G (24 GB)", 23028 * MiB, (8, 6)),
        GpuPreset("a100-40", "NVIDIA A100-SXM4-40GB", 40960 * MiB, (8, 0)),
        GpuPreset("a100-80", "NVIDIA A100-SXM4-80GB", 81920 * MiB, (8, 0)),
        GpuPreset("h100-80", "NVIDIA H100 80GB HBM3", 81559 * MiB, (9, 0)),
        GpuPreset("h200", "NVIDIA H200 (141 GB)", 143771 * MiB, (9, 0)),
    )
}


def preset(name: str) -> GpuPreset:
    """The preset called `name`; an unknown name is a ValueError listing the known ones."""
    key = name.strip().lower()
    if key not in PRESETS:
        raise ValueError(f"unknown GPU preset {name!r}; known presets: {', '.join(PRESETS)}")
    return PRESETS[key]
