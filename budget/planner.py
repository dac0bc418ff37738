"""Split each card across the models placed on it: fixed shares first, the LLM's `rest` becomes KV cache; refuse
with the fix."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from budget.calibration import Calibration, apply_calibration
from budget.estimate import Estimate
from budget.estimators import estimate
from budget.fp8 import card_checks
from budget.runtimes import runtime_notes
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
    """One card: every model's share, the LLM's KV pool, and the verdict with its fixes."""

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
    device: str = "cuda:0"   # the card, as models name it ("cuda:1"; "cpu" for a stack planned against RAM)
    name: str = ""           # short, for a refusal: the preset, the GPU's name, or the size

    @property
    def card(self) -> str:
        """`card 1 (rtx-4090)`: what the report and a refusal call this card."""
        index = self.device.partition(":")[2] or self.device
        return f"card {index} ({self.name})" if self.name else f"card {index}"

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


@dataclass(slots=True)
class StackPlan:
    """Every card planned on its own; models off every card (CPU, a url) are listed with the first card."""

    cards: list[Plan]
    models: list[ModelPlan]  # every model, in the stack file's order

    @property
    def fits(self) -> bool:
        return all(card.fits for card in self.cards)

    @property
    def problems(self) -> list[str]:
        return [p for card in self.cards for p in card.problems]

    @property
    def notes(self) -> list[str]:
        return [n for card in self.cards for n in card.notes]

    def card_of(self, mp: ModelPlan) -> Plan:
        """The card a model is planned on (the first card for a model off every card)."""
        return next((card for card in self.cards if mp.on_card and mp.device == card.device), self.cards[0])


def _round_up(n: float, step: int = SHARE_ROUNDING) -> int:
    return int(math.ceil(n / step) * step)


def _device_of(device) -> str:
    return "cpu" if device == "cpu" else f"cuda:{device}"


def plan_stack(stack, total_bytes: int, device_label: str, calibration: Calibration | None = None) -> Plan:
    """Estimate every model of a one-card stack and split `total_bytes` (the card, or RAM for a CPU stack)."""
    if len(stack.cards) != 1:
        raise ValueError(f"plan_stack plans one card, but the stack lists {len(stack.cards)}; use plan_cards")
    return plan_cards(stack, [(total_bytes, device_label, "")], calibration).cards[0]


def plan_cards(stack, targets: list[tuple[int, str, str]], calibration: Calibration | None = None,
               capabilities: list[tuple[int, int] | None] | None = None) -> StackPlan:
    """Estimate every model, then split each card's (total, label, name) between the models placed on it; a card's
    compute capability, where known, decides what its fp8 settings become (budget/fp8.py)."""
    devices = [_device_of(card.device) for card in stack.cards]
    models: list[ModelPlan] = []
    notes: dict[str, list[str]] = {}
    shared_context: set[str] = set()
    for spec in stack.models:
        notes[spec.name] = []
        if getattr(spec, "url", None) is not None:  # a server we do not run: nothing of it is on any card
            est = Estimate(spec.name, spec.kind, spec.url, "remote", 0, 0, 0,
                           formulas={"weights": f"served by {spec.url}, not on this card"})
            models.append(ModelPlan(est, "remote", 0, "remote", False))
            continue
        device = _device_of(spec.device if spec.device is not None else stack.cards[0].device)
        est = estimate(spec, on_gpu=device != "cpu")
        if calibration is not None and apply_calibration(est, calibration):
            notes[spec.name].append(f"{est.name}: activations and context from the calibration measured on "
                                    f"{calibration.device}")
        notes[spec.name].extend(est.notes)
        notes[spec.name].extend(runtime_notes(spec.name, est.runtime, device))
        if spec.isolation == "none":
            if device in shared_context:
                est.context_bytes = 0
                est.formulas["context"] = "shares the server process's context (isolation: none)"
            shared_context.add(device)
        on_card = device in devices
        models.append(ModelPlan(est, device, 0, str(spec.memory) if on_card else device, on_card))
    cards = []
    for i, (card, (total, label, name)) in enumerate(zip(stack.cards, targets, strict=True)):
        mine = [(mp, s) for mp, s in zip(models, stack.models)
                if mp.device == devices[i] or (i == 0 and not mp.on_card)]
        plan = Plan(label, total, card.reserve, [mp for mp, _ in mine], device=devices[i], name=name,
                    notes=[note for mp, _ in mine for note in notes[mp.estimate.name]])
        _split(plan, [s for mp, s in mine if mp.on_card], [mp for mp, _ in mine if mp.on_card], card.auto_margin)
        for spec in (s for mp, s in mine if mp.on_card):
            problems, fp8_notes = card_checks(spec, (capabilities or [None] * len(targets))[i], name or label)
            plan.problems += problems
            plan.notes += fp8_notes
        if len(stack.cards) > 1:  # with several cards, a refusal says which
            plan.problems = [f"{plan.card}: {problem}" for problem in plan.problems]
        cards.append(plan)
    return StackPlan(cards, models)


def _split(plan: Plan, specs: list, on_card: list[ModelPlan], auto_margin: float) -> None:
    """Fixed shares first, then `rest` takes what is left of the card and the LLM's spare becomes KV cache."""
    total_bytes, reserve = plan.total_bytes, plan.reserve_bytes
    if reserve >= total_bytes:
        plan.problems.append(f"gpu.reserve {human(reserve)} is the whole card ({human(total_bytes)}); "
                             "lower it (1GiB is usual)")
        return
    available = total_bytes - reserve
    for mp, spec in zip(on_card, specs):
        mode = spec.memory.mode
        if mode == "bytes":
            mp.share_bytes = int(spec.memory.value)
        elif mode == "percent":
            mp.share_bytes = int(total_bytes * spec.memory.value / 100)
        elif mode == "auto":
            mp.share_bytes = _round_up(mp.estimate.need_bytes * (1 + auto_margin))
            mp.share_rule = f"auto+{auto_margin:.0%}"
        if mode != "rest" and spec.kind != "llm" and mp.share_bytes < mp.estimate.need_bytes:
            plan.problems.append(
                f"{spec.name} needs {human(mp.estimate.need_bytes)} ({_parts(mp.estimate)}) but its share is "
                f"{human(mp.share_bytes)}; set its memory to at least {human(_round_up(mp.estimate.need_bytes))} "
                "or to auto")

    fixed = sum(mp.share_bytes for mp, s in zip(on_card, specs) if s.memory.mode != "rest")
    llm_pair = next(((mp, s) for mp, s in zip(on_card, specs) if s.kind == "llm"), None)
    rest = next((mp for mp, s in zip(on_card, specs) if s.memory.mode == "rest"), None)
    if fixed > available:
        _over_budget(plan, fixed - available, available)
    elif rest is not None:
        rest.share_bytes = available - fixed
    if llm_pair is not None and fixed <= available:
        _size_kv(plan, *llm_pair, is_rest=llm_pair[0] is rest)


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
            f"or plan a bigger card{_quantized_hint(est, spare, block_bytes)}")
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


def _quantized_hint(est, spare: int, block_bytes: int) -> str:
    """What `quantization: int8 | int4` would leave for KV: the sizes that fit, named."""
    hints = []
    for fmt, weights in est.quantized_alternatives.items():
        left = spare + est.weights_bytes - weights
        tokens = max(left, 0) // block_bytes * est.block_size
        verdict = (f"fits with {tokens:,} tokens of KV" if tokens >= est.max_model_len else
                   f"leaves {tokens:,} tokens of KV, short of max_model_len {est.max_model_len:,}")
        hints.append(f"{fmt}: {human(weights)} of weights, {verdict}")
    return f". Quantized at load (quantization: int8 | int4): {'; '.join(hints)}" if hints else ""
