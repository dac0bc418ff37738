"""An OpenAI server we launch as the LLM's worker (vLLM, or any command): on a loopback port, with its own key.

It is started in its own process group (so stopping it stops everything it forked), is healthy when its
health URL answers 200, and is measured like our own workers: NVML per PID on a GPU, the resident set of
its process tree on CPU. A command that exits, or is not healthy in time, is a start error naming the model,
with nothing left running.
"""
from __future__ import annotations

import logging
import os
import secrets
import signal
import subprocess
from pathlib import Path

import psutil

from orchestrator.net import ProcessExited, wait_healthy
from orchestrator.workers.handle import WorkerStartError

log = logging.getLogger(__name__)
STOP_TIMEOUT_S = 10.0


class LaunchedServer:
    def __init__(self, name: str, argv: list[str], port: int, api_key: str, health_path: str, timeout_s: float,
                 log_file: Path, env: dict[str, str] | None = None) -> None:
        self.name, self.argv, self.port, self.api_key = name, argv, port, api_key
        self.env = env or {}  # on top of ours: the one card it may see
        self.health_url = f"http://127.0.0.1:{port}{health_path}"
        self.base_url = f"http://127.0.0.1:{port}/v1"
        self.timeout_s, self.log_file = timeout_s, log_file
        self.process: subprocess.Popen | None = None

    @staticmethod
    def new_key() -> str:
        return secrets.token_urlsafe(24)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def start(self) -> None:
        """Run the command and wait until it is healthy; WorkerStartError (and nothing left running) otherwise."""
        log.info("%s: launching %s", self.name, " ".join(self.argv))
        with open(self.log_file, "ab") as out:
            try:
                self.process = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=out,
                                                stderr=subprocess.STDOUT, start_new_session=True,
                                                env={**os.environ, **self.env})
            except OSError as error:
                raise WorkerStartError(f"model {self.name!r}: its command {self.argv[0]!r} could not be started "
                                       f"({error}); check the command in the stack file") from None
        try:
            wait_healthy(self.health_url, self.process, self.timeout_s)
        except ProcessExited as exited:
            self.stop()
            raise WorkerStartError(f"model {self.name!r}: its server exited with code {exited.code} while starting; "
                                   f"its output is in {self.log_file}:\n{self._tail()}") from None
        except TimeoutError:
            self.stop()
            raise WorkerStartError(f"model {self.name!r}: its server was not healthy at {self.health_url} within "
                                   f"{self.timeout_s:g} s (start_timeout_s); its output is in {self.log_file}") from None

    def held_bytes(self, device: str) -> int | None:
        """What the server's process tree holds: on the GPU by NVML per PID (None where NVML lists none of them, as in
        containers), on CPU its resident set."""
        try:
            tree = psutil.Process(self.process.pid)
            processes = [tree, *tree.children(recursive=True)]
        except psutil.NoSuchProcess:
            return 0
        if device.startswith("cuda"):
            from budget.devices import nvml_index
            from budget.probe import probe_gpus

            index, pids = nvml_index(int(device.partition(":")[2] or 0)), {p.pid for p in processes}
            gpu = next((g for g in probe_gpus().gpus if g.index == index), None)
            seen = [n for pid, n in (gpu.processes.items() if gpu else ()) if pid in pids and n]
            return sum(seen) if seen else None
        total = 0
        for p in processes:
            try:
                total += p.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        return total

    @staticmethod
    def held_source(device: str) -> str:
        """Which measurement held_bytes is on `device`."""
        return "nvml per process" if device.startswith("cuda") else "rss"

    def stop(self) -> None:
        """SIGTERM to the whole group, SIGKILL after STOP_TIMEOUT_S: no child left behind."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        except ProcessLookupError:
            pass

    def _tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""
