"""Which memory the plan splits: a `--gpu-memory` size, a `--gpu` preset, the stack's `gpu.memory`, or NVML."""
from __future__ import annotations

from budget.estimate import PlanInputError
from budget.gpus import preset
from budget.probe import host_memory_bytes, probe_gpus
from budget.units import human, parse_size


def resolve_target(device, stack_memory, gpu_preset: str | None = None,
                   gpu_memory: str | None = None) -> tuple[int, str]:
    """(total bytes, label) in the order: --gpu-memory, --gpu, gpu.memory, the real device (NVML or RAM)."""
    if gpu_memory is not None:
        total = parse_size(gpu_memory)
        if total <= 0:
            raise PlanInputError(f"--gpu-memory {gpu_memory!r} must be above zero, like 24GiB")
        return total, f"{human(total)} (--gpu-memory)"
    if gpu_preset is not None:
        try:
            card = preset(gpu_preset)
        except ValueError as exc:
            raise PlanInputError(str(exc)) from None
        return card.total_bytes, f"{card.label}, {human(card.total_bytes)} (--gpu {card.name})"
    if stack_memory != "auto":
        return int(stack_memory), f"{human(stack_memory)} (gpu.memory)"
    if device == "cpu":
        total = host_memory_bytes()
        return total, f"host RAM, {human(total)} (gpu.device: cpu)"
    probe = probe_gpus()
    if probe.error:
        raise PlanInputError(f"gpu.memory is auto but {probe.error}. Plan for a card you don't have with "
                             "--gpu rtx-4090 (see `orchestrator gpus`), --gpu-memory 24GiB, or set gpu.memory "
                             "in the stack file")
    match = next((g for g in probe.gpus if g.index == device), None)
    if match is None:
        raise PlanInputError(f"gpu.device is {device} but this machine has GPUs "
                             f"{', '.join(str(g.index) for g in probe.gpus)}; pick one of them")
    return match.total_bytes, f"{match.name}, {human(match.total_bytes)} (GPU {device}, NVML)"
