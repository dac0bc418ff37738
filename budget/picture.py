"""A stacked bar per card: one colour per model, its parts shaded, so the split is seen before it is read."""
from __future__ import annotations

from pathlib import Path

from budget.planner import Plan, StackPlan
from budget.units import GiB

# (part, alpha, hatch): the browser playground draws its bar with these too.
PARTS = (("weights", 1.0, None), ("activations", 0.75, "//"), ("context + graphs", 0.55, ".."),
         ("KV cache", 0.4, "xx"), ("margin", 0.2, None))


def segments(plan: Plan | StackPlan) -> list[tuple[str, str, float]]:
    """(model, part, GiB) in card order, then reserve and unassigned memory; a stack's first card."""
    if isinstance(plan, StackPlan):
        plan = plan.cards[0]
    out = []
    for mp in plan.models:
        if not mp.on_card:
            continue
        e = mp.estimate
        values = (e.weights_bytes, e.activation_bytes, e.context_bytes + e.graph_bytes, mp.kv_bytes,
                  max(mp.margin_bytes, 0))
        out += [(e.name, part, v / GiB) for (part, _, _), v in zip(PARTS, values) if v > 0]
    assigned = sum(mp.share_bytes for mp in plan.models if mp.on_card)
    out.append(("reserve", "reserve", plan.reserve_bytes / GiB))
    free = plan.total_bytes - plan.reserve_bytes - assigned
    if free > 0:
        out.append(("unassigned", "free", free / GiB))
    return out


def save_png(plan: Plan | StackPlan, path: Path) -> None:
    """Write the picture, one bar per card on one GiB scale; matplotlib is imported here only, so planning never
    pays for it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    cards = plan.cards if isinstance(plan, StackPlan) else [plan]
    models = [mp.estimate.name for card in cards for mp in card.models if mp.on_card]
    palette = plt.get_cmap("tab10")
    colour = {name: palette(i % 10) for i, name in enumerate(models)}
    colour |= {"reserve": (0.35, 0.35, 0.35, 1), "unassigned": (0.85, 0.85, 0.85, 1)}
    style = {part: (alpha, hatch) for part, alpha, hatch in PARTS}
    height = 0.7 + 2.0 * len(cards)  # inches: a bar per card, the legend under them all
    fig, axes = plt.subplots(len(cards), 1, figsize=(12, height), sharex=True, squeeze=False)
    widest = max(max(sum(size for *_, size in segments(card)), card.total_bytes / GiB) for card in cards)
    for ax, card in zip(axes[:, 0], cards):
        _draw_bar(ax, card, colour, style, len(cards) > 1)
        ax.set_xlim(0, widest * 1.01)
    axes[-1, 0].set_xlabel("GiB")
    handles = [Patch(color=colour[m], label=m) for m in models + ["reserve", "unassigned"]]
    handles += [Patch(facecolor="white", edgecolor="black", hatch=h, label=p) for p, _, h in PARTS if h]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 9), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.45 / height, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _draw_bar(ax, plan: Plan, colour: dict, style: dict, named: bool) -> None:
    """One card's bar, its total marked by a black line, its verdict in the title."""
    left = 0.0
    for model, part, size in segments(plan):
        alpha, hatch = style.get(part, (1.0, None))
        ax.barh(0, size, left=left, color=colour[model], alpha=alpha, hatch=hatch, edgecolor="white", linewidth=0.6)
        if size > plan.total_bytes / GiB * 0.06 and part in ("weights", "KV cache", "reserve", "free"):
            ax.text(left + size / 2, 0, f"{model}\n{part} {size:.1f}", ha="center", va="center", fontsize=8)
        left += size
    over = left - plan.total_bytes / GiB
    ax.axvline(plan.total_bytes / GiB, color="black", linewidth=1.5)
    ax.set_yticks([])
    status = "fits" if plan.fits else f"does not fit{f' ({over:.1f} GiB over)' if over >= 0.05 else ''}"
    ax.set_title(f"{plan.card + ': ' if named else ''}{plan.device_label}: {status}", loc="left", fontsize=10)
