"""Split one card across a stack: fixed shares first, the LLM's `rest` becomes KV cache; refuse with the fix."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from budget.calibration import Calibration, apply_calibration
from budget.estimate import Estimate
from budget.estimators import estimate
from budget.units import MiB, human

SHARE_ROUNDING = 64 * MiB


@dataclass(slots=True)
class ModelPlan:
    """One model's estimate and the share the planner gives it."""

    estimate: Estimate
    device: str
    share_bytes: int
    share_rule: str
    on_card: bool
    kv_bytes: int = 0

    @property
    def margin_bytes(self) -> int:
        """What the share holds beyond the estimate (for the LLM, beyond its KV pool too)."""
        return self.share_bytes - self.estimate.need_bytes - self.kv_bytes if self.on_card else 0


@dataclass(slots=True)
class Plan:
    """The whole card: every model's share, the LLM's KV pool, and the verdict with its fixes."""

    device_label: str
    total_bytes: int
    reserve_bytes: int
    models: list[ModelPlan]
    llm: str | None = None
    kv_bytes_per_token: int = 0
    block_size: int = 0
    kv_blocks: int = 0
    kv_tokens: int = 0
    max_model_len: int = 0
    max_concurrent_sequences: int = 0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def fits(self) -> bool:
        return not self.problems

    @property
    def used_bytes(self) -> int:
        """Expected peak on the card: every estimate plus the full KV pool."""
        return sum(m.estimate.need_bytes + m.kv_bytes for m in self.models if m.on_card)

    @property
    def headroom_bytes(self) -> int:
        """Expected free memory at peak: the reserve, every share's margin, and anything unassigned."""
        return self.total_bytes - self.used_bytes


def _round_up(n: float, step: int = SHARE_ROUNDING) -> int:
    return int(math.ceil(n / step) * step)


def _device_of(spec, stack_device) -> str:
    device = spec.device if spec.device is not None else stack_device
    return "cpu" if device == "cpu" else f"cuda:{device}"


def plan_stack(stack, total_bytes: int, device_label: str, calibration: Calibration | None = None) -> Plan:
    """Estimate every model and split `total_bytes` (the card, or RAM for a CPU stack) between them."""
    card = _device_of(stack.gpu, stack.gpu.device)
    reserve = stack.gpu.reserve
    plan = Plan(device_label, total_bytes, reserve, [])
    shared_context: set[str] = set()
    for spec in stack.models:
        if getattr(spec, "url", None) is not None:  # a server we do not run: nothing of it is on this card
            est = Estimate(spec.name, spec.kind, spec.url, "remote", 0, 0, 0,
                           formulas={"weights": f"served by {spec.url}, not on this card"})
            plan.models.append(ModelPlan(est, "remote", 0, "remote", False))
            continue
        device = _device_of(spec, stack.gpu.device)
        est = estimate(spec, on_gpu=device != "cpu")
        if calibration is not None and apply_calibration(est, calibration):
            plan.notes.append(f"{est.name}: activations and context from the calibration measured on "
                              f"{calibration.device}")
        plan.notes.extend(est.notes)
        if spec.isolation == "none":
            if device in shared_context:
                est.context_bytes = 0
                est.formulas["context"] = "shares the server process's context (isolation: none)"
            shared_context.add(device)
        plan.models.append(ModelPlan(est, device, 0, str(spec.memory), device == card))

    if reserve >= total_bytes:
        plan.problems.append(f"gpu.reserve {human(reserve)} is the whole card ({human(total_bytes)}); "
                             "lower it (1GiB is usual)")
        return plan
    available = total_bytes - reserve
    for mp, spec in zip(plan.models, stack.models):
        if not mp.on_card:
            mp.share_rule = "remote" if mp.device == "remote" else mp.device
            continue
        mode = spec.memory.mode
        if mode == "bytes":
            mp.share_bytes = int(spec.memory.value)
        elif mode == "percent":
            mp.share_bytes = int(total_bytes * spec.memory.value / 100)
        elif mode == "auto":
            mp.share_bytes = _round_up(mp.estimate.need_bytes * (1 + stack.gpu.auto_margin))
            mp.share_rule = f"auto+{stack.gpu.auto_margin:.0%}"
        if mode != "rest" and spec.kind != "llm" and mp.share_bytes < mp.estimate.need_bytes:
            plan.problems.append(
                f"{spec.name} needs {human(mp.estimate.need_bytes)} ({_parts(mp.estimate)}) but its share is "
                f"{human(mp.share_bytes)}; set its memory to at least {human(_round_up(mp.estimate.need_bytes))} "
                "or to auto")

    fixed = sum(mp.share_bytes for mp, s in zip(plan.models, stack.models) if mp.on_card and s.memory.mode != "rest")
    llm_pair = next(((mp, s) for mp, s in zip(plan.models, stack.models) if s.kind == "llm" and mp.on_card), None)
    rest = next((mp for mp, s in zip(plan.models, stack.models) if s.memory.mode == "rest" and mp.on_card), None)
    if fixed > available:
        _over_budget(plan, fixed - available, available)
    elif rest is not None:
        rest.share_bytes = available - fixed
    if llm_pair is not None and fixed <= available:
        _size_kv(plan, *llm_pair, is_rest=llm_pair[0] is rest)
    return plan


def _parts(est: Estimate) -> str:
    parts = [("weights", est.weights_bytes), ("activations", est.activation_bytes),
             ("cuda graphs", est.graph_bytes), ("context", est.context_bytes)]
    return ", ".join(f"{name} {human(n)}" for name, n in parts if n)


def _over_budget(plan: Plan, over: int, available: int) -> None:
    """The fixed shares alone overflow the card: say by how much, and which shares can shrink."""
    slack = [(mp, mp.share_bytes - mp.estimate.need_bytes) for mp in plan.models if mp.on_card and mp.share_bytes]
    cuts = []
    remaining = over
    for mp, spare in sorted(slack, key=lambda x: -x[1]):
        if remaining <= 0 or spare <= 0:
            continue
        cut = min(spare, remaining)
        cuts.append(f"{mp.estimate.name} {human(mp.share_bytes)} → {human(_round_up(mp.share_bytes - cut, MiB))}")
        remaining -= cut
    message = (f"the fixed shares add up to {human(available + over)}, {human(over)} more than the "
               f"{human(available)} this card has after the {human(plan.reserve_bytes)} reserve")
    if remaining <= 0:
        message += f"; shrink them toward their estimates: {', '.join(cuts)}"
    else:
        message += "; even at their estimates they do not fit: drop a model, use smaller ones, or plan a bigger card"
    plan.problems.append(message)


def _size_kv(plan: Plan, mp: ModelPlan, spec, is_rest: bool) -> None:
    """Whatever the LLM's share holds beyond its estimate becomes KV blocks; check one max_model_len fits."""
    est = mp.estimate
    plan.llm, plan.kv_bytes_per_token, plan.block_size = est.name, est.kv_bytes_per_token, est.block_size
    plan.max_model_len = est.max_model_len
    spare = mp.share_bytes - est.need_bytes
    block_bytes = est.kv_bytes_per_token * est.block_size
    if spare <= 0:
        left = "after the other models and the reserve" if is_rest else "in its share"
        one_sequence = math.ceil(est.max_model_len / est.block_size) * block_bytes
        smallest = plan.total_bytes - spare + one_sequence
        plan.problems.append(
            f"{est.name} needs {human(est.need_bytes)} before any KV cache ({_parts(est)}), but only "
            f"{human(mp.share_bytes)} is left {left}. This stack needs a card of at least {human(smallest)} "
            f"(one {est.max_model_len:,}-token sequence of KV included); choose a smaller or quantized model, "
            "or plan a bigger card")
        return
    plan.kv_blocks = spare // block_bytes
    plan.kv_tokens = plan.kv_blocks * est.block_size
    mp.kv_bytes = plan.kv_blocks * block_bytes
    blocks_per_seq = math.ceil(est.max_model_len / est.block_size)
    plan.max_concurrent_sequences = plan.kv_blocks // blocks_per_seq
    if plan.max_concurrent_sequences < 1:
        need = blocks_per_seq * block_bytes
        largest = plan.kv_tokens // 256 * 256
        hint = f"set max_model_len to {largest:,} or less" if largest >= 256 else "choose a smaller model"
        if spec.kv_cache_dtype in ("auto", "bfloat16", "float16", "float32"):
            hint += " (or kv_cache_dtype: fp8, which halves the KV per token)"
        plan.problems.append(f"max_model_len {est.max_model_len:,} needs {human(need)} of KV cache for one sequence; "
                             f"{human(spare)} is left for {est.name}; largest that fits: {largest:,} tokens. "
                             f"{hint[0].upper() + hint[1:]}, or give it more memory")
    elif plan.max_concurrent_sequences < spec.max_num_seqs:
        n = plan.max_concurrent_sequences
        plan.notes.append(f"{n} sequence{'s fit' if n > 1 else ' fits'} at the full max_model_len "
                          f"{est.max_model_len:,}; up to max_num_seqs={spec.max_num_seqs} run at once when shorter")
