"""Start every engine of a stack in its own worker, each held to its plan's share of its card; restart one that dies.

Fixed-share engines start first (together), each capped and warmed up at its peak; then the LLM's KV
pool is sized from what is really free at that moment. A worker that holds more than its share by
more than its card's tolerance stops the start. A worker sees only its card (CUDA_VISIBLE_DEVICES), as
cuda:0. The clients the server routes to outlive restarts: a dead worker's client answers 503 until its
successor is attached.
"""
from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import wait
from pathlib import Path

from budget.devices import nvml_index, worker_env
from budget.planner import ModelPlan, StackPlan
from budget.units import human
from engines.protocols import FrontProtocol
from orchestrator.launch.argv import launch_argv
from orchestrator.launch.server import LaunchedServer
from orchestrator.net import free_port
from orchestrator.stack import Stack
from orchestrator.workers.build import Built, build, serve_in_process
from orchestrator.workers.client import EngineClient
from orchestrator.workers.handle import Started, WorkerHandle, WorkerStartError
from orchestrator.kinds import KINDS
from orchestrator.status import EngineState, EngineStatus
from orchestrator.workers.worker import WorkerSpec

log = logging.getLogger(__name__)
MAX_RESTARTS, RESTART_WINDOW_S, MAX_BACKOFF_S = 5, 300.0, 30.0
STOP_TIMEOUT_S = 2.0  # every worker is asked at once; one still running after this is terminated


class AccountingError(RuntimeError):
    """A model holds more than its share after warm-up; the stack's plan is wrong for this machine."""


class Supervisor:
    def __init__(self, stack: Stack, plan: StackPlan, log_level: str = "INFO") -> None:
        self.stack, self.plan, self.log_level = stack, plan, log_level
        self.specs = {m.name: m for m in stack.models}
        self.status: dict[str, EngineStatus] = {
            m.estimate.name: EngineStatus(m.estimate.name, m.estimate.kind, EngineState.LOADING, m.share_bytes, None)
            for m in plan.models}
        self.clients: dict[str, FrontProtocol] = {}  # what the server routes to, by model name (its kind's protocol)
        self.infos: dict[str, dict] = {}           # what each engine told the server at start (paths, voices, limits)
        self._handles: dict[str, WorkerHandle] = {}
        self._launched: dict[str, LaunchedServer] = {}  # OpenAI servers we started as an LLM's worker
        self._channels: dict[str, object] = {}
        self._local: list[Built] = []
        self._restart_times: dict[str, list[float]] = {}
        self._stopping = threading.Event()

    def start(self, on_progress: Callable[[str, str], None]) -> None:
        """Fixed shares first, then the LLM; any failure stops what started and raises with the model named."""
        plans = {m.estimate.name: m for m in self.plan.models}
        fixed = [p for p in plans.values() if not KINDS[p.estimate.kind].kv_pool]
        llm = [p for p in plans.values() if KINDS[p.estimate.kind].kv_pool]
        try:
            with ThreadPoolExecutor(max(1, len(fixed))) as pool:
                for future in [pool.submit(self._start_one, p, 0, on_progress) for p in fixed]:
                    future.result()
            for p in llm:
                self._start_one(p, self._llm_kv_bytes(p), on_progress)
        except BaseException:
            self.stop()
            raise

    def _cpu_threads(self) -> int:
        """Each CPU worker's thread count: the cores split between them, since oversubscribed thread pools spin
        against each other (on 2 cores, four 2-thread workers made 4 voice sessions' ASR 12x slower)."""
        on_cpu = sum(1 for m in self.plan.models if m.device == "cpu"
                     and self.specs[m.estimate.name].isolation == "process")
        return max(1, (os.cpu_count() or 1) // max(1, on_cpu))

    def _start_one(self, p: ModelPlan, kv_bytes: int, on_progress: Callable[[str, str], None]) -> None:
        spec, name = self.specs[p.estimate.name], p.estimate.name
        if spec.kind == "llm" and spec.remote:
            self._start_upstream(p, spec, kv_bytes, on_progress)
            return
        if spec.isolation == "none":
            on_progress(name, "loading in the server process")
            built = build(spec, p.device, kv_bytes, lambda stage: on_progress(name, stage))
            self._local.append(built)
            self.clients[name], self.infos[name] = serve_in_process(spec, built), built.info
            self._mark_ready(name, None, None)
            return
        handle = WorkerHandle(self.worker_spec(p, kv_bytes))
        self._handles[name] = handle
        started = handle.start(lambda stage: on_progress(name, stage))
        self._check_share(p, started.held_bytes, handle.stop)
        client = KINDS[spec.kind].client.for_worker(spec, started.info)
        self.clients[name], self.infos[name] = client, started.info
        self._attach(name, client, started)
        self._mark_ready(name, started.held_bytes, handle.pid, started.held_source)
        threading.Thread(target=self._watch, args=(name,), name=f"watch-{name}", daemon=True).start()

    def worker_spec(self, p: ModelPlan, kv_bytes: int) -> WorkerSpec:
        """What a worker is spawned with: its card alone made visible (as cuda:0), its share and its KV pool."""
        try:
            env, device = worker_env(p.device)
        except ValueError as error:
            raise WorkerStartError(f"model {p.estimate.name!r}: {error}") from None
        return WorkerSpec(p.estimate.name, p.estimate.kind, self.specs[p.estimate.name].model_dump(), device,
                          p.share_bytes, kv_bytes, self.log_level,
                          self._cpu_threads(), env, p.estimate.runtime)

    def _start_upstream(self, p: ModelPlan, spec, kv_bytes: int, on_progress: Callable[[str, str], None]) -> None:
        """An LLM served over HTTP: a url we only route to, or a server we launch with the plan's share."""
        from orchestrator.workers.upstream import Upstream

        name = spec.name
        self.infos[name] = {"max_model_len": spec.max_model_len or 0}
        if spec.url is not None:
            self.clients[name] = Upstream(name, spec.url, spec.api_key, spec.model or name)
            self.status[name].state, self.status[name].detail = EngineState.READY, f"served by {spec.url}"
            return
        port, key = free_port(), LaunchedServer.new_key()
        try:
            argv = launch_argv(spec, p, self.plan.card_of(p).total_bytes, kv_bytes, port, key)
        except ValueError as error:
            raise WorkerStartError(str(error)) from None
        env = self.worker_spec(p, kv_bytes).env  # the server sees only its card, as a worker does
        server = LaunchedServer(name, argv, port, key,
                                spec.health_path, spec.start_timeout_s,
                                Path(tempfile.gettempdir()) / f"orchestrator-{name}-{port}.log", env)
        on_progress(name, f"launching {spec.engine}: {' '.join(server.argv)}")
        server.start()
        self._launched[name] = server
        held = server.held_bytes(p.device)
        self._check_share(p, held, server.stop)
        self.clients[name] = Upstream(name, server.base_url, key, spec.model or name)
        self.infos[name] = {"max_model_len": spec.max_model_len or p.estimate.max_model_len}
        self._mark_ready(name, held, server.pid, server.held_source(p.device))
        threading.Thread(target=self._watch_launched, args=(name, p.device), name=f"watch-{name}",
                         daemon=True).start()

    def _watch_launched(self, name: str, device: str) -> None:
        """A launched server that exits is started again (its clients get 503 meanwhile), as a worker would be."""
        server, status = self._launched[name], self.status[name]
        while server.process is not None:
            code = server.process.wait()
            if self._stopping.is_set():
                return
            status.state, status.detail = EngineState.RESTARTING, f"its server exited with code {code}"
            log.error("%s: its server exited with code %s; restarting", name, code)
            now = time.monotonic()
            recent = [t for t in self._restart_times.get(name, []) if now - t < RESTART_WINDOW_S] + [now]
            self._restart_times[name] = recent
            if len(recent) > MAX_RESTARTS:
                status.state = EngineState.FAILED
                status.detail = f"died {len(recent)} times in {RESTART_WINDOW_S:.0f} s"
                return
            self._stopping.wait(min(MAX_BACKOFF_S, 2.0 ** (len(recent) - 1)))
            try:
                server.start()
            except WorkerStartError as error:
                status.state, status.detail = EngineState.FAILED, str(error)
                return
            status.restarts += 1
            self._mark_ready(name, server.held_bytes(device), server.pid, server.held_source(device))

    def _check_share(self, p: ModelPlan, held: int | None, stop: Callable[[], None]) -> None:
        card = self.stack.card_of(self.specs[p.estimate.name])
        if card is None:  # off every card (on the CPU of a GPU stack): it has no share to be held to
            return
        if held is None:  # nothing here could see the process (NVML blind in a container): said, not passed silently
            log.warning("%s: what it holds could not be measured (NVML lists no bytes for its process and the card's "
                        "used memory was not readable); its share %s is unchecked", p.estimate.name,
                        human(p.share_bytes))
            return
        limit = p.share_bytes * (1 + card.tolerance)
        if held > limit:
            stop()
            raise AccountingError(
                f"model {p.estimate.name!r} holds {human(held)} after warm-up, more than its share of "
                f"{human(p.share_bytes)} plus its card's tolerance ({card.tolerance:.0%}); "
                f"give it a larger `memory:` or lower its limits, then run `orchestrator plan` again")

    def _llm_kv_bytes(self, p: ModelPlan) -> int:
        """On a GPU: the least of what NVML says is free on its card now, what the planned total leaves after what the
        others hold, and its own share (less the card's reserve and the LLM's non-KV need). On CPU: the plan's."""
        if not p.device.startswith("cuda"):
            return p.kv_bytes
        from budget.probe import probe_gpus

        index = nvml_index(int(p.device.partition(":")[2] or 0))
        gpu = next((g for g in probe_gpus().gpus if g.index == index), None)
        if gpu is None:
            return p.kv_bytes
        card = self.plan.card_of(p)
        free = gpu.free_bytes - card.reserve_bytes - p.estimate.need_bytes
        # A stack planned smaller than its card (--gpu-memory 24GiB on an H200) holds to the planned total: what
        # the others hold now (measured; their share if not) is taken from it, never the card's free memory alone.
        others = sum(s.actual_bytes if s.actual_bytes is not None else s.planned_bytes
                     for m in card.models if m.on_card and m.estimate.name != p.estimate.name
                     for s in [self.status[m.estimate.name]])
        planned = card.total_bytes - card.reserve_bytes - others - p.estimate.need_bytes
        measured = min(free, planned, p.share_bytes - p.estimate.need_bytes)
        log.info("%s: KV pool sized from what is free now: %s (the card's free memory allows %s, the planned total "
                 "%s; the plan said %s)", p.estimate.name, human(measured), human(free), human(planned),
                 human(p.kv_bytes))
        return max(0, measured)

    def _attach(self, name: str, client: EngineClient, started: Started) -> None:
        self._channels[name] = started.channel
        client.attach(started.channel)

    def _mark_ready(self, name: str, held: int | None, pid: int | None, source: str = "") -> None:
        status = self.status[name]
        status.state, status.actual_bytes, status.pid, status.detail = EngineState.READY, held, pid, ""
        status.actual_source = source
        where = (f"{human(held)} held (pid {pid}, {source or 'nvml per process'})" if held is not None else
                 f"holding unknown (pid {pid})" if pid is not None else "in the server process")
        log.info("%s ready: %s, its share %s", name, where, human(status.planned_bytes))

    def _watch(self, name: str) -> None:
        """Wait for the worker to end; unless we are stopping, restart it with backoff."""
        handle = self._handles[name]
        while True:
            # Wait on the sentinel, not join(): stop() reaps the process, and two reapers race (the loser sees a
            # live process that has already exited, and would terminate it with a warning).
            wait([handle.process.sentinel])
            if self._stopping.is_set():
                return
            handle.process.join()
            code = handle.process.exitcode
            client: EngineClient = self.clients[name]
            client.detach(f"is restarting (its worker exited with code {code}); retry shortly")
            status = self.status[name]
            status.state, status.detail = EngineState.RESTARTING, f"worker exited with code {code}"
            log.error("%s: worker exited with code %s; restarting", name, code)
            if not self._restart(name, handle, client):
                return

    def _restart(self, name: str, handle: WorkerHandle, client: EngineClient) -> bool:
        now = time.monotonic()
        recent = [t for t in self._restart_times.get(name, []) if now - t < RESTART_WINDOW_S] + [now]
        self._restart_times[name] = recent
        status = self.status[name]
        if len(recent) > MAX_RESTARTS:
            status.state = EngineState.FAILED
            status.detail = f"died {len(recent)} times in {RESTART_WINDOW_S:.0f} s; not restarted"
            client.detach("has failed and is not restarted; see the server log")
            log.error("%s: %s", name, status.detail)
            return False
        self._stopping.wait(min(MAX_BACKOFF_S, 2.0 ** (len(recent) - 1)))
        while not self._stopping.is_set():
            try:
                started = handle.start(lambda stage: log.info("%s: %s", name, stage))
            except WorkerStartError as error:
                status.detail = str(error)
                log.error("%s", error)
                self._stopping.wait(MAX_BACKOFF_S)
                continue
            status.restarts += 1
            self._attach(name, client, started)
            self._mark_ready(name, started.held_bytes, handle.pid, started.held_source)
            log.info("%s: restarted (pid %s)", name, handle.pid)
            return True
        return False

    def stop(self) -> None:
        """Stop every worker at once (no child left behind), then every in-process engine."""
        self._stopping.set()
        for name, handle in self._handles.items():
            client = self.clients.get(name)
            if isinstance(client, EngineClient):
                client.detach("is shutting down")
            handle.ask_to_stop(self._channels.pop(name, None))
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for handle in self._handles.values():
            handle.stop(None, max(0.1, deadline - time.monotonic()))
        for server in self._launched.values():
            server.stop()
        for built in self._local:
            built.close()
        self._local.clear()
