"""A stack file started through the Supervisor, as `orchestrator run` starts it, and served on a loopback port."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from live_server import live_server


@contextmanager
def live_stack(stack_file: Path, key: str, isolation: str | None = "none") -> Iterator[tuple]:
    """Yield (app, supervisor, url) with every model at `isolation` (none: in this process; None: as the stack file
    says, as `orchestrator run` starts it); stop it all on exit."""
    from budget.target import plan_stack_cards
    from orchestrator.stack_app import build_stack_app
    from orchestrator.stack_file import load_stack
    from orchestrator.supervisor import Supervisor

    spec = load_stack(stack_file)
    for model in spec.models:
        model.isolation = isolation or model.isolation
    supervisor = Supervisor(spec, plan_stack_cards(spec), "WARNING")
    supervisor.start(lambda name, stage: None)
    try:
        app = build_stack_app(spec, supervisor, key)
        with live_server(app) as url:
            yield app, supervisor, url
    finally:
        supervisor.stop()
