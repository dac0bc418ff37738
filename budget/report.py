"""The plan as people and programs read it: a rich table, Markdown for an issue, JSON for machines."""
from __future__ import annotations

from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from budget.planner import Plan, StackPlan
from budget.units import GiB, gib

COLUMNS = ("model", "kind", "rule", "weights", "activ.", "context", "KV", "share", "margin")


def _rows(plan: Plan) -> list[list[str]]:
    rows = []
    for mp in plan.models:
        e = mp.estimate
        context = e.context_bytes + e.graph_bytes
        rows.append([e.name, e.kind, mp.share_rule, _g(e.weights_bytes), _g(e.activation_bytes), _g(context),
                     _g(mp.kv_bytes) if e.kind == "llm" else "-", _g(mp.share_bytes) if mp.on_card else "-",
                     _g(mp.margin_bytes) if mp.on_card else "-"])
    return rows


def _g(n: int) -> str:
    return f"{n / GiB:.2f}"


def _summary(plan: Plan) -> list[tuple[str, str]]:
    lines = [("card", plan.device_label), ("reserve", gib(plan.reserve_bytes))]
    if plan.llm:
        lines += [("KV cache", f"{plan.kv_tokens:,} tokens in {plan.kv_blocks:,} blocks of {plan.block_size} "
                               f"({plan.kv_bytes_per_token:,} B per token)"),
                  ("concurrency", f"{plan.max_concurrent_sequences} sequence(s) at max_model_len "
                                  f"{plan.max_model_len:,}")]
    lines += [("weights", f"{mp.estimate.name}: {mp.estimate.storage}, {mp.estimate.weights_bytes:,} B")
              for mp in plan.models if mp.estimate.storage]
    lines += [("ASR batch", f"{mp.estimate.name}: up to {mp.estimate.batch} utterances decoded at once, "
                            f"{gib(mp.estimate.activation_bytes)} of activations planned for them")
              for mp in plan.models if mp.estimate.batch > 1]
    lines += [("expected peak", gib(plan.used_bytes)), ("headroom", gib(plan.headroom_bytes))]
    return lines


def verdict(plan: Plan) -> str:
    return "FITS" if plan.fits else "DOES NOT FIT"


def _cards(plan: Plan | StackPlan) -> list[Plan]:
    return plan.cards if isinstance(plan, StackPlan) else [plan]


def print_table(plan: Plan | StackPlan, console: Console, explain: bool = False) -> None:
    """One table per card (a one-card stack prints exactly one, untitled by card), then the stack's verdict."""
    cards = _cards(plan)
    for i, card in enumerate(cards):
        if i:
            console.print()
        _print_card(card, console, explain, f", {card.card}" if len(cards) > 1 else "")
    if len(cards) > 1:
        refused = [card.card for card in cards if not card.fits]
        colour = "red" if refused else "green"
        console.print(f"\n[bold]stack verdict[/bold]  [bold {colour}]{'FITS' if not refused else 'DOES NOT FIT'}"
                      f"[/bold {colour}]{': ' + ', '.join(refused) + ' refused' if refused else ''}", highlight=False)


def _print_card(plan: Plan, console: Console, explain: bool, which: str) -> None:
    """The terminal report of one card: one row per model, then the totals, the verdict and each fix."""
    table = Table(title=f"Memory plan{which} (GiB; context includes CUDA graphs)", title_justify="left",
                  box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False, show_edge=False,
                  collapse_padding=True)
    for col in COLUMNS:
        table.add_column(col, justify="left" if col in ("model", "kind", "rule") else "right",
                         no_wrap=col != "model", min_width=10 if col == "model" else None)
    for row in _rows(plan):
        table.add_row(*row)
    console.print(table)
    for key, value in _summary(plan):
        console.print(f"  [bold]{key:<14}[/bold] {value}", soft_wrap=True)
    colour = "green" if plan.fits else "red"
    console.print(f"  [bold]{'verdict':<14}[/bold] [bold {colour}]{verdict(plan)}[/bold {colour}]")
    for problem in plan.problems:
        console.print(f"  [red]✗[/red] {problem}", soft_wrap=True)
    for note in plan.notes:
        console.print(f"  [dim]•[/dim] {note}", soft_wrap=True)
    if explain:
        for mp in plan.models:
            console.print(f"\n[bold]{mp.estimate.name}[/bold] ({mp.estimate.kind}, from {mp.estimate.source})",
                          soft_wrap=True)
            for part, formula in mp.estimate.formulas.items():
                console.print(f"  {part:<13} {formula}", soft_wrap=True)


def markdown(plan: Plan | StackPlan) -> str:
    """GitHub-flavoured tables with the totals under each, for pasting into an issue; a heading per card of several."""
    cards = _cards(plan)
    if len(cards) == 1:
        return _markdown_card(cards[0])
    out = [f"### {card.card}\n\n{_markdown_card(card)}" for card in cards]
    return "\n".join(out) + f"\n**stack verdict**: {'FITS' if plan.fits else 'DOES NOT FIT'}\n"


def _markdown_card(plan: Plan) -> str:
    out = ["All sizes in GiB.", "", "| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---" for _ in COLUMNS) + "|"]
    out += ["| " + " | ".join(row) + " |" for row in _rows(plan)]
    out.append("")
    out += [f"- **{key}**: {value}" for key, value in _summary(plan)]
    out.append(f"- **verdict**: {verdict(plan)}")
    out += [f"- ✗ {p}" for p in plan.problems] + [f"- {n}" for n in plan.notes]
    return "\n".join(out) + "\n"


def to_json(plan: Plan | StackPlan) -> dict[str, Any]:
    """Every number in bytes. A stack's JSON is its first card's at the top level (the shape a one-card stack has
    always had) with `fits`, `problems` and `notes` for the whole stack, and `cards`: every card, the first too."""
    if isinstance(plan, Plan):
        return _card_json(plan)
    cards = [_card_json(card) | {"card": card.card, "index": _index(card), "name": card.name} for card in plan.cards]
    return cards[0] | {"fits": plan.fits, "problems": plan.problems, "notes": plan.notes, "cards": cards}


def _index(plan: Plan) -> int | str:
    """The card as a model's `device` names it: its CUDA index, or `cpu`."""
    index = plan.device.partition(":")[2]
    return int(index) if index else plan.device


def _card_json(plan: Plan) -> dict[str, Any]:
    """One card, named as the issue tracker and later stages (worker caps, KV sizing) read it."""
    models = []
    for mp in plan.models:
        e = mp.estimate
        entry = {"name": e.name, "kind": e.kind, "device": mp.device, "on_card": mp.on_card, "source": e.source,
                 "runtime": e.runtime,
                 "dtype": e.dtype, "storage": e.storage, "parameters": e.parameters, "weights_bytes": e.weights_bytes,
                 "activation_bytes": e.activation_bytes, "context_bytes": e.context_bytes,
                 "cuda_graph_bytes": e.graph_bytes, "need_bytes": e.need_bytes, "share_bytes": mp.share_bytes,
                 "share_rule": mp.share_rule, "margin_bytes": mp.margin_bytes, "formulas": e.formulas}
        if e.kind == "llm":
            entry |= {"kv_bytes": mp.kv_bytes, "kv_bytes_per_token": e.kv_bytes_per_token,
                      "max_model_len": e.max_model_len, "block_size": e.block_size}
        models.append(entry)
    return {"device": plan.device_label, "total_bytes": plan.total_bytes, "reserve_bytes": plan.reserve_bytes,
            "models": models, "llm": plan.llm, "kv_bytes_per_token": plan.kv_bytes_per_token,
            "kv_blocks": plan.kv_blocks, "kv_tokens": plan.kv_tokens, "block_size": plan.block_size,
            "max_model_len": plan.max_model_len, "max_concurrent_sequences": plan.max_concurrent_sequences,
            "used_bytes": plan.used_bytes, "headroom_bytes": plan.headroom_bytes, "fits": plan.fits,
            "problems": plan.problems, "notes": plan.notes}
