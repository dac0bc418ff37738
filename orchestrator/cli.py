"""`orchestrator plan|run|gpus`: the command line. Exit codes: 0 fits (or ran), 1 does not fit or cannot start, 2 bad input."""
from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from pathlib import Path

from rich.console import Console

from orchestrator import __version__

EXIT_FITS, EXIT_DOES_NOT_FIT, EXIT_BAD_INPUT = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="orchestrator", description=__doc__)
    parser.add_argument("--version", action="version", version=f"orchestrator {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    plan = sub.add_parser("plan", help="prove a stack fits before anything loads, and show how each card is split")
    plan.add_argument("stack", help="stack file (YAML), e.g. configs/vtuber-24gb.yaml")
    target = plan.add_mutually_exclusive_group()
    target.add_argument("--gpu", metavar="PRESET", help="plan a one-card stack for a card you don't have (see "
                        "`orchestrator gpus`); a stack with gpus: takes each card's preset: or memory: instead")
    target.add_argument("--gpu-memory", metavar="SIZE", help="plan a one-card stack for this much memory, e.g. 24GiB")
    out = plan.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print the plan as JSON (bytes)")
    out.add_argument("--markdown", action="store_true", help="print the plan as a Markdown table")
    plan.add_argument("--png", metavar="FILE", type=Path, help="also draw each card's memory as a stacked bar")
    plan.add_argument("--explain", action="store_true", help="show the formula behind every number")
    plan.add_argument("--replicas", type=int, default=1, metavar="N", help="plan N copies of the stack (one card "
                      "each, as `run --ray --replicas N` deploys them) and show the cluster total")
    plan.add_argument("--calibration", metavar="FILE", type=Path,
                      help="measured memory from a real run (JSON) that replaces estimated activations and context")
    run = sub.add_parser("run", help="start every model of the stack, each held to its share, on one port")
    run.add_argument("stack", help="stack file (YAML), e.g. configs/demo.yaml")
    run.add_argument("--host", help="listen address (default: the stack's server.host)")
    run.add_argument("--port", type=int, help="listen port (default: the stack's server.port)")
    run.add_argument("--api-key", help="require 'Authorization: Bearer KEY' (default: the stack's server.api_key)")
    run.add_argument("--seed", type=int, help="the LLM's default sampling seed (default: the stack's)")
    run.add_argument("--gpu-memory", metavar="SIZE", help="plan and run a one-card stack as if the card had this "
                     "much, e.g. 20GiB")
    run.add_argument("--ray", nargs="?", const="", metavar="ADDRESS", help="replicate the whole stack on Ray Serve: "
                     "connect to ADDRESS (e.g. ray://head:10001 or auto), or start a local cluster when none is given")
    run.add_argument("--replicas", type=int, help="with --ray: how many whole stacks (one card each; default 1)")
    run.add_argument("--log-level", default="INFO", type=str.upper,
                     choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="log detail (default INFO)")
    sub.add_parser("gpus", help="list the GPU presets and the GPUs NVML sees here")
    return parser


def _plan(args: argparse.Namespace, console: Console, errors: Console) -> int:
    from budget.calibration import load_calibration
    from budget.estimate import PlanInputError
    from budget.report import markdown, print_table, to_json
    from budget.target import plan_stack_cards
    from budget.tensors import CheckpointError
    from budget.units import SizeError
    from orchestrator.launch.argv import planned_launches
    from orchestrator.stack_file import StackError, load_stack

    try:
        stack = load_stack(args.stack)
        calibration = load_calibration(args.calibration) if args.calibration else None
        plan = plan_stack_cards(stack, args.gpu, args.gpu_memory, calibration)
    except (StackError, PlanInputError, CheckpointError, SizeError) as exc:
        errors.print(f"[bold red]error:[/bold red] {exc}", highlight=False, soft_wrap=True)
        return EXIT_BAD_INPUT
    if args.replicas < 1:
        errors.print(f"[bold red]error:[/bold red] --replicas {args.replicas}: plan at least 1 replica",
                     highlight=False)
        return EXIT_BAD_INPUT
    try:
        launches = planned_launches(stack, plan) if plan.fits else {}
    except ValueError as exc:  # the plan cannot be handed to vLLM as it is (a dtype it lacks, a share it refuses)
        errors.print(f"[bold red]error:[/bold red] {exc}", highlight=False, soft_wrap=True)
        return EXIT_BAD_INPUT
    cluster = _cluster(plan, args.replicas) if args.replicas > 1 else {}
    if args.json:
        print(json.dumps(to_json(plan) | ({"launch": launches} if launches else {}) | cluster, indent=2))
    elif args.markdown:
        print(markdown(plan), end="")
    else:
        print_table(plan, console, explain=args.explain)
        devices = {mp.estimate.name: mp.device for mp in plan.models}
        for name, argv in launches.items():
            index = devices[name].partition(":")[2]  # a server on another card than 0 is run seeing only that card
            card = f"CUDA_VISIBLE_DEVICES={index} " if index not in ("", "0") else ""
            console.print(f"  {name} is launched as (port and key chosen at run time):\n    {card}{shlex.join(argv)}",
                          highlight=False, soft_wrap=True)
        if cluster:
            from budget.units import human

            c = cluster["cluster"]
            verdict = "each replica fits its card" if plan.fits else "refused: no replica is deployed"
            console.print(f"  {args.replicas} replicas, one plan above per replica: {c['cards']} cards, "
                          f"{human(c['total_bytes'])} in all, {c['kv_tokens']:,} KV tokens; {verdict}",
                          highlight=False)
    if args.png:
        from budget.picture import save_png

        try:
            save_png(plan, args.png)
        except OSError as exc:
            errors.print(f"[bold red]error:[/bold red] cannot write {args.png}: {exc}", highlight=False)
            return EXIT_BAD_INPUT
        errors.print(f"picture written to {args.png}", highlight=False)
    return EXIT_FITS if plan.fits else EXIT_DOES_NOT_FIT


def _cluster(plan, replicas: int) -> dict:
    """The cluster total of `replicas` copies of this plan, each on cards of its own."""
    return {"replicas": replicas, "cluster": {"cards": replicas * len(plan.cards),
                                              "total_bytes": replicas * sum(c.total_bytes for c in plan.cards),
                                              "kv_tokens": replicas * sum(c.kv_tokens for c in plan.cards)}}


def _gpus(console: Console) -> int:
    from rich.table import Table

    from budget.gpus import PRESETS
    from budget.probe import probe_gpus
    from budget.units import gib

    table = Table(title="GPU presets (--gpu NAME)", title_justify="left")
    for col in ("name", "card", "memory"):
        table.add_column(col)
    for p in PRESETS.values():
        table.add_row(p.name, p.label, gib(p.total_bytes))
    console.print(table)
    probe = probe_gpus()
    if probe.error:
        console.print(f"This machine: {probe.error}.")
    for g in probe.gpus:
        console.print(f"GPU {g.index}: {g.name}, total {gib(g.total_bytes)}, free {gib(g.free_bytes)}, "
                      f"{len(g.processes)} process(es) using "
                      + (gib(sum(g.processes.values())) if None not in g.processes.values() else "unknown (NVML)"))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    console, errors = Console(), Console(stderr=True)
    if args.command == "plan":
        return _plan(args, console, errors)
    if args.command == "run":
        from orchestrator.run import RunOptions, run

        logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        return run(RunOptions(args.stack, args.host, args.port, args.api_key, args.seed, args.gpu_memory,
                              args.log_level, args.ray, args.replicas), console, errors)
    return _gpus(console)


if __name__ == "__main__":
    sys.exit(main())
