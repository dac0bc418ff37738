"""Which memory the plan splits: a `--gpu-memory` size, a `--gpu` preset, the stack's `memory`/`preset`, or NVML."""
from __future__ import annotations

from dataclasses import dataclass

from budget.calibration import Calibration
from budget.devices import nvml_index
from budget.estimate import PlanInputError
from budget.gpus import preset
from budget.planner import StackPlan, plan_cards
from budget.probe import host_memory_bytes, probe_gpus
from budget.units import human, parse_size


@dataclass(frozen=True, slots=True)
class Target:
    """One card's total, the label the report prints, and the short name a refusal calls it by."""

    total_bytes: int
    label: str
    name: str
    compute_capability: tuple[int, int] | None = None  # known for a preset or a card NVML sees


def resolve_target(device, stack_memory, gpu_preset: str | None = None,
                   gpu_memory: str | None = None) -> tuple[int, str]:
    """(total bytes, label) in the order: --gpu-memory, --gpu, gpu.memory, the real device (NVML or RAM)."""
    target = _resolve(device, stack_memory, gpu_preset, gpu_memory, "--gpu", "gpu")
    return target.total_bytes, target.label


def resolve_cards(stack, gpu_preset: str | None = None, gpu_memory: str | None = None) -> list[Target]:
    """Every card of the stack; --gpu and --gpu-memory stand for the one card of a `gpu:` stack only."""
    if stack.gpus is None:
        return [_resolve(stack.gpu.device, stack.gpu.memory, gpu_preset, gpu_memory, "--gpu", "gpu")]
    if gpu_preset is not None or gpu_memory is not None:
        flag = "--gpu" if gpu_preset is not None else "--gpu-memory"
        raise PlanInputError(f"{flag} plans a one-card stack, but this one lists {len(stack.gpus)} cards under gpus; "
                             "give each card its own preset: (e.g. {device: 1, preset: rtx-4090}) or memory: instead")
    return [_resolve(card.device, card.memory, card.preset, None, f"gpus[{i}].preset", f"gpus[{i}]")
            for i, card in enumerate(stack.gpus)]


def _resolve(device, stack_memory, gpu_preset: str | None, gpu_memory: str | None, preset_source: str,
             section: str) -> Target:
    if gpu_memory is not None:
        total = parse_size(gpu_memory)
        if total <= 0:
            raise PlanInputError(f"--gpu-memory {gpu_memory!r} must be above zero, like 24GiB")
        return Target(total, f"{human(total)} (--gpu-memory)", human(total))
    if gpu_preset is not None:
        try:
            card = preset(gpu_preset)
        except ValueError as exc:
            raise PlanInputError(str(exc)) from None
        return Target(card.total_bytes, f"{card.label}, {human(card.total_bytes)} ({preset_source} {card.name})",
                      card.name, card.compute_capability)
    if stack_memory != "auto":
        return Target(int(stack_memory), f"{human(stack_memory)} ({section}.memory)", human(stack_memory))
    if device == "cpu":
        total = host_memory_bytes()
        return Target(total, f"host RAM, {human(total)} (gpu.device: cpu)", "host RAM")
    probe = probe_gpus()
    if probe.error:
        raise PlanInputError(f"{section}.memory is auto but {probe.error}. Plan for a card you don't have with "
                             + ("--gpu rtx-4090 (see `orchestrator gpus`), --gpu-memory 24GiB, or set gpu.memory "
                                "in the stack file" if section == "gpu" else
                                f"a preset ({section}.preset: rtx-4090, see `orchestrator gpus`) or {section}.memory"))
    index = nvml_index(device)
    match = next((g for g in probe.gpus if g.index == index), None)
    if match is None:
        raise PlanInputError(f"{section}.device is {device} but this machine has GPUs "
                             f"{', '.join(str(g.index) for g in probe.gpus)}; pick one of them")
    return Target(match.total_bytes, f"{match.name}, {human(match.total_bytes)} (GPU {device}, NVML)", match.name,
                  match.compute_capability)


def plan_stack_cards(stack, gpu_preset: str | None = None, gpu_memory: str | None = None,
                     calibration: Calibration | None = None) -> StackPlan:
    """How `plan`, `run` and each Ray replica plan: the stack's cards resolved (a preset or a size standing in
    for a `gpu:` stack's one card), then every model placed and sized on them (`plan_stack` is one card's)."""
    targets = resolve_cards(stack, gpu_preset, gpu_memory)
    return plan_cards(stack, [(t.total_bytes, t.label, t.name) for t in targets], calibration,
                      [t.compute_capability for t in targets])
