"""Whole planned stacks replicated on Ray Serve: each replica is one card holding the whole stack, behind Serve's proxy.

Serve does what a cluster needs and we must not write ourselves: one HTTP entry (its proxy), routing
(power-of-two-choices on each replica's queue: a new session goes to the less loaded of two), a WebSocket
or a stream staying on the replica that took it (it is one connection), health checks, and replacing a
replica that fails them or dies. Each replica plans its stack against the card it lands on, starts it
with our supervisor (workers are the replica's children and die with it), and serves our FastAPI app.
Only `orchestrator run --ray` imports this module, so the single-card path never imports Ray.
"""
from __future__ import annotations

import logging
import os
import signal
import threading
import time
from dataclasses import asdict

from orchestrator.status import EngineState

log = logging.getLogger(__name__)
APP_NAME = "voice-stack"
NAMESPACE = "voice-orchestrator"
REGISTRY = "voice-stack-replicas"
REPORT_EVERY_S, FORGET_AFTER_S = 2.0, 10.0
KEYS_PER_REPLICA = 1024
_REPLICA: dict = {}  # in a replica process: its supervisor, for the health check


def _registry_class():
    """Where every replica reports its engines, so /health/engines through the entry shows them all."""
    import ray

    @ray.remote(num_cpus=0)
    class ReplicaRegistry:
        def __init__(self) -> None:
            self.replicas: dict[str, dict] = {}

        def report(self, replica: dict, engines: list[dict]) -> None:
            self.replicas[replica["id"]] = {**replica, "engines": engines, "at": time.time()}

        def all(self) -> list[dict]:
            """Replicas heard from lately (a dead one drops out after FORGET_AFTER_S)."""
            now = time.time()
            return [{k: v for k, v in r.items() if k != "at"} | {"seconds_ago": round(now - r["at"], 1)}
                    for r in self.replicas.values() if now - r["at"] < FORGET_AFTER_S]

    return ReplicaRegistry


def _report_forever(replica: dict, supervisor) -> None:
    """A replica's thread: its engines' status to the registry every REPORT_EVERY_S."""
    import ray

    registry = ray.get_actor(REGISTRY, namespace=NAMESPACE)
    while True:
        registry.report.remote(replica, [asdict(s) for s in supervisor.status.values()])
        time.sleep(REPORT_EVERY_S)


def _replica_app(stack_path: str, api_key: str | None, gpu_memory: str | None, log_level: str):
    """The builder Serve calls in each replica: plan on this replica's card, start the stack, return its app."""

    def build():
        import ray
        from ray import serve

        from budget.target import plan_stack_cards
        from orchestrator.stack_app import build_stack_app
        from orchestrator.stack_file import load_stack
        from orchestrator.supervisor import Supervisor

        stack = load_stack(stack_path)
        plan = plan_stack_cards(stack, None, gpu_memory)
        if not plan.fits:  # the card this replica landed on is not the one the stack was checked against
            raise RuntimeError(f"the stack does not fit this replica's card: {'; '.join(plan.problems)}")
        supervisor = Supervisor(stack, plan, log_level)
        supervisor.start(lambda name, stage: log.info("%s: %s", name, stage))
        _REPLICA["supervisor"] = supervisor
        app = build_stack_app(stack, supervisor, api_key or stack.server.api_key)
        replica = serve.get_replica_context().replica_id.unique_id
        app.state.replica = {"id": replica, "pid": os.getpid()}
        threading.Thread(target=_report_forever, args=(app.state.replica, supervisor), name="replica-report",
                         daemon=True).start()
        registry = ray.get_actor(REGISTRY, namespace=NAMESPACE)
        app.state.cluster = lambda: ray.get(registry.all.remote(), timeout=10)

        @serve.multiplexed(max_num_models_per_replica=KEYS_PER_REPLICA)
        async def hold(key: str) -> str:
            """A session or user key this replica now holds: Serve's multiplexed routing sends the key's next
            requests here, where its conversation's prefix is in the KV cache."""
            return key

        @app.middleware("http")
        async def tag(request, call_next):
            """Which replica answered (how a client or a test sees the spread); a keyed request pins its key here."""
            if key := serve.get_multiplexed_model_id():
                await hold(key)
            response = await call_next(request)
            response.headers["x-replica"] = replica
            return response

        return app

    return build


def _check_reachable(address: str) -> None:
    """A cluster address that nothing answers at fails in seconds here; Ray itself would retry for minutes."""
    import socket

    if address == "auto":
        return  # Ray looks for a cluster started on this machine, and says at once if there is none
    hostport = address.removeprefix("ray://").rsplit("/", 1)[0]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ConnectionError(f"{address!r} is not HOST:PORT (or ray://HOST:PORT, or auto)")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as error:
        raise ConnectionError(f"nothing answers at {host}:{port} ({error.strerror or error})") from None


def deploy(stack_path: str, replicas: int, address: str | None, host: str, port: int, api_key: str | None,
           gpu_memory: str | None, on_gpu: bool, log_level: str) -> None:
    """Connect to (or start) a Ray cluster, deploy `replicas` whole stacks behind one entry, serve until a signal."""
    import ray
    from ray import serve

    started_here = address is None
    if address is not None:
        _check_reachable(address)
    ray.init(address=address or "local", namespace=NAMESPACE, include_dashboard=False, logging_level=log_level,
             **({"_node_ip_address": "127.0.0.1"} if started_here else {}))
    try:
        registry = _registry_class().options(name=REGISTRY).remote()  # lives as long as this driver
        serve.start(http_options={"host": host, "port": port})

        @serve.deployment(name="stack", num_replicas=replicas, health_check_period_s=5, health_check_timeout_s=30,
                          ray_actor_options={"num_gpus": 1} if on_gpu else {"num_cpus": 1},
                          max_ongoing_requests=256)
        @serve.ingress(_replica_app(stack_path, api_key, gpu_memory, log_level))
        class StackReplica:
            def check_health(self) -> None:
                """A stack with a failed engine (restarts spent) is unhealthy: Serve replaces the replica."""
                supervisor = _REPLICA.get("supervisor")
                failed = [s.name for s in supervisor.status.values() if s.state == EngineState.FAILED] if supervisor else []
                if failed:
                    raise RuntimeError(f"engines failed: {', '.join(failed)}")

        serve.run(StackReplica.bind(), name=APP_NAME, route_prefix="/")
        ray.get(registry.all.remote())  # the registry answers before we say the entry is up
        log.info("%d replicas of %s serve on http://%s:%d", replicas, stack_path, host, port)
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        stop.wait()
    finally:
        try:
            serve.delete(APP_NAME)
            if started_here:
                serve.shutdown()
        finally:
            ray.shutdown()
