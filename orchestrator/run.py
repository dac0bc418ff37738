"""`orchestrator run STACK`: plan, start every engine in its worker held to its share, serve them all on one port.

The plan prints first and a stack that does not fit never starts. Fixed-share engines load first,
then the LLM on what is left; plan beside actual prints once all are ready. SIGINT or SIGTERM stops
accepting, ends the streams, stops every worker, and exits 0.
"""
from __future__ import annotations

import logging
import signal
from dataclasses import dataclass

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

log = logging.getLogger(__name__)


@dataclass(slots=True)
class RunOptions:
    stack: str
    host: str | None = None
    port: int | None = None
    api_key: str | None = None
    seed: int | None = None
    gpu_memory: str | None = None
    log_level: str = "INFO"
    ray: str | None = None        # None: this machine's card; "": a local Ray cluster; else its address
    replicas: int | None = None


def run(opts: RunOptions, console: Console, errors: Console) -> int:
    if opts.replicas is not None and opts.ray is None:
        errors.print("[bold red]error:[/bold red] --replicas needs --ray (replicas run on Ray Serve)", highlight=False)
        return 2
    if opts.replicas is not None and opts.replicas < 1:
        errors.print(f"[bold red]error:[/bold red] --replicas {opts.replicas}: a deployment needs at least 1 replica",
                     highlight=False)
        return 2
    from budget.estimate import PlanInputError
    from budget.report import print_table
    from budget.target import plan_stack_cards
    from budget.tensors import CheckpointError
    from budget.units import SizeError
    from orchestrator.stack_file import StackError, load_stack

    try:
        stack = load_stack(opts.stack)
        if opts.seed is not None:
            for model in stack.models:
                if model.kind == "llm":
                    model.seed = opts.seed
        plan = plan_stack_cards(stack, None, opts.gpu_memory)
    except (StackError, PlanInputError, CheckpointError, SizeError) as exc:
        errors.print(f"[bold red]error:[/bold red] {exc}", highlight=False, soft_wrap=True)
        return 2
    print_table(plan, console)
    if not plan.fits:
        errors.print(f"[bold red]refusing to start:[/bold red] the stack does not fit; fix it as above and check with "
                     f"`orchestrator plan {opts.stack}`", highlight=False)
        return 1
    if opts.ray is not None:
        return _serve_on_ray(stack, plan, opts, errors)
    return _start_and_serve(stack, plan, opts, console, errors)


def _serve_on_ray(stack, plan, opts: RunOptions, errors: Console) -> int:
    """The stack fits one card (checked above, before anything is deployed): replicate it on Ray Serve."""
    try:
        from orchestrator.scale.ray_serve import deploy
    except ImportError:
        errors.print("[bold red]error:[/bold red] --ray needs Ray Serve: pip install '.[ray]'", highlight=False)
        return 2
    on_gpu = any(m.device.startswith("cuda") for m in plan.models)
    try:
        deploy(opts.stack, opts.replicas or 1, opts.ray or None, opts.host or stack.server.host,
               opts.port or stack.server.port, opts.api_key, opts.gpu_memory, on_gpu, opts.log_level)
    except ConnectionError as exc:
        errors.print(f"[bold red]error:[/bold red] cannot reach the Ray cluster at {opts.ray!r}: {exc}; start one "
                     "with `ray start --head`, or leave out the address for a local cluster", highlight=False)
        return 2
    return 0


def _start_and_serve(stack, plan, opts: RunOptions, console: Console, errors: Console) -> int:
    import uvicorn

    from orchestrator.stack_app import build_stack_app
    from orchestrator.supervisor import AccountingError, Supervisor
    from orchestrator.workers.handle import WorkerStartError

    supervisor = Supervisor(stack, plan, opts.log_level)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # while starting, SIGTERM stops as Ctrl-C does
    try:
        with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console,
                      transient=True) as progress:
            tasks = {m.estimate.name: progress.add_task(f"{m.estimate.name}: waiting") for m in plan.models}
            supervisor.start(lambda name, stage: progress.update(tasks[name], description=f"{name}: {stage}"))
    except (WorkerStartError, AccountingError, ValueError, OSError) as exc:
        errors.print(f"[bold red]could not start the stack:[/bold red] {exc}", highlight=False, soft_wrap=True)
        return 1
    except KeyboardInterrupt:
        errors.print("interrupted while starting; every worker is stopped", highlight=False)
        return 130
    try:
        print_plan_beside_actual(supervisor, console)
        app = build_stack_app(stack, supervisor, opts.api_key or stack.server.api_key)
        # uvicorn handles SIGINT/SIGTERM (stop accepting, end streams) and then re-raises the signal; with these
        # handlers in place that re-raise returns here, so the workers are stopped and the exit code is 0.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: log.info("stopping the workers"))
        uvicorn.run(app, host=opts.host or stack.server.host, port=opts.port or stack.server.port,
                    log_level=opts.log_level.lower(), timeout_graceful_shutdown=10)
    finally:
        supervisor.stop()
    return 0


def print_plan_beside_actual(supervisor, console: Console) -> None:
    from budget.units import human

    plan = supervisor.plan
    several = len(plan.cards) > 1
    table = Table(title="Plan beside actual (measured after warm-up)", title_justify="left")
    for column in ("model", "kind", *(("card",) if several else ()), "planned share", "actual", "actual / plan", "pid"):
        table.add_column(column, justify="left" if column in ("model", "kind", "card") else "right")
    where = {m.estimate.name: (plan.card_of(m).card if m.on_card else m.device) for m in plan.models}
    for s in supervisor.status.values():
        if s.actual_bytes is None:
            actual = "unknown" if s.actual_source == "unknown" else "in server"
        else:
            actual = human(s.actual_bytes) + (f" ({s.actual_source})" if s.actual_source else "")
        ratio = "" if s.actual_bytes is None or not s.planned_bytes else f"{s.actual_bytes / s.planned_bytes:.0%}"
        table.add_row(s.name, s.kind, *((where[s.name],) if several else ()), human(s.planned_bytes), actual, ratio,
                      str(s.pid or ""))
    console.print(table)
