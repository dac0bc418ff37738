"""The supervisor's hold on one worker process: spawn it, follow its start, stop it without leaving it behind."""
from __future__ import annotations

import logging
import multiprocessing as mp
from collections.abc import Callable
from dataclasses import dataclass, field

from orchestrator.workers.channel import Channel
from orchestrator.workers.messages import Progress, Ready, StartFailed, Stop
from orchestrator.workers.worker import WorkerSpec, worker_main

log = logging.getLogger(__name__)
SPAWN = mp.get_context("spawn")  # a fresh interpreter: no CUDA state or threads inherited from the server


class WorkerStartError(RuntimeError):
    """A worker failed to load or warm up; the message names the model and why."""


@dataclass(slots=True)
class Started:
    channel: Channel
    held_bytes: int | None
    peak_allocated: int
    info: dict = field(default_factory=dict)
    held_source: str = ""


class WorkerHandle:
    def __init__(self, ws: WorkerSpec) -> None:
        self.ws = ws
        self.process: mp.process.BaseProcess | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def start(self, on_progress: Callable[[str], None]) -> Started:
        """Spawn, then block until the worker is ready (its measured memory in hand) or has failed."""
        parent, child = SPAWN.Pipe()
        self.process = SPAWN.Process(target=worker_main, args=(child, self.ws), name=f"worker-{self.ws.name}",
                                     daemon=True)
        self.process.start()
        log.info("%s: worker process %s started", self.ws.name, self.process.pid)
        child.close()
        channel = Channel(parent)
        while (message := channel.recv()) is not None:
            match message:
                case Progress(stage=stage):
                    on_progress(stage)
                case Ready():
                    return Started(channel, message.held_bytes, message.peak_allocated, message.info,
                                   message.held_source)
                case StartFailed(reason=reason):
                    self.stop()
                    raise WorkerStartError(f"model {self.ws.name!r} ({self.ws.kind}) failed to start: {reason}")
        self.process.join(5)
        code = self.process.exitcode
        raise WorkerStartError(f"model {self.ws.name!r} ({self.ws.kind}): its worker exited while starting "
                               f"(exit code {code}); see the log above")

    def alive(self) -> bool:
        return self.process is not None and self.process.is_alive()

    def ask_to_stop(self, channel: Channel | None) -> None:
        """Send Stop and let go of the pipe; the worker exits once its engine loop returns."""
        if channel is not None:
            channel.send(Stop())
            channel.close()

    def stop(self, channel: Channel | None = None, timeout: float = 2.0) -> None:
        """Ask politely, then kill (a worker ignores SIGTERM: only its supervisor stops it): none outlives us."""
        if self.process is None:
            return
        self.ask_to_stop(channel)
        self.process.join(timeout)
        if self.process.is_alive():
            log.warning("%s did not stop in %.0f s; killing it", self.ws.name, timeout)
            self.process.kill()
            self.process.join(1)
