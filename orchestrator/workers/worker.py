"""A worker process: cap itself to its share, load and warm up one engine, report what it holds, then serve.

A worker never outlives the supervisor: a watchdog thread ends it within half a second of its parent's
death (even by SIGKILL), while loading or serving. (Linux's parent-death signal would fire when the
supervisor *thread* that spawned it exits, which a thread pool's threads do.)
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection

from orchestrator.workers.channel import Channel
from orchestrator.workers.messages import Progress, Ready, StartFailed

log = logging.getLogger(__name__)
PARENT_POLL_S = 0.5


@dataclass(slots=True)
class WorkerSpec:
    name: str
    kind: str
    spec: dict                # the stack file's entry, as plain data for the spawned process
    device: str               # "cpu", or "cuda:0": the one card `env` leaves visible
    share_bytes: int          # the plan's share: the cap on a GPU, the yardstick for plan beside actual
    kv_bytes: int             # the LLM's KV pool (0 for other kinds)
    log_level: str = "INFO"
    cpu_threads: int = 0      # on CPU: this worker's share of the cores (0: the libraries' defaults)
    env: dict[str, str] = field(default_factory=dict)  # set before anything starts CUDA: CUDA_VISIBLE_DEVICES
    runtime: str = "torch"    # what allocates on the card (the plan's): torch, ctranslate2 or onnxruntime


def worker_main(conn: Connection, ws: WorkerSpec) -> None:
    """Entry point of the spawned process; every failure goes back to the supervisor as text, never a traceback."""
    os.environ.update(ws.env)  # first: CUDA reads which cards it may see once, when it starts
    # Ctrl-C, and a SIGTERM sent to the whole process group (`timeout`, container runtimes), reach us too: the
    # supervisor alone stops workers, so every stop takes its one path (and a supervisor killed outright is
    # noticed by the parent watch below).
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), name="parent-watch", daemon=True).start()
    logging.basicConfig(level=ws.log_level, format=f"%(asctime)s {ws.name} %(levelname)s %(name)s: %(message)s")
    channel = Channel(conn)
    if ws.device == "cpu" and ws.cpu_threads:
        os.environ["OMP_NUM_THREADS"] = str(ws.cpu_threads)  # before CTranslate2 or OpenMP start their pools
        import torch

        torch.set_num_threads(ws.cpu_threads)
    try:
        from budget.caps import apply_cap
        from engines.base import mark_baseline, measure_memory
        from orchestrator.stack import SPEC_BY_KIND
        from orchestrator.workers.build import build, serve_in_process
        from orchestrator.kinds import KINDS

        kind = KINDS[ws.kind]
        log.info(apply_cap(ws.device, ws.share_bytes, ws.runtime))
        mark_baseline(ws.device)
        spec = SPEC_BY_KIND[ws.kind].model_validate(ws.spec)
        built = build(spec, ws.device, ws.kv_bytes, lambda stage: channel.send(Progress(stage)))
        usage = measure_memory(ws.device)  # the whole process, runtime included, as the plan's context counts it
        log.info("holds %s after warm-up (%s)", "unknown" if usage.process is None else f"{usage.process:,} B",
                 usage.source)
        channel.send(Ready(usage.process, usage.peak_allocated, built.info, usage.source))
    except Exception as error:  # a bad path or an OOM at load: say which and why, and end
        channel.send(StartFailed(str(error) or type(error).__name__))
        return
    try:
        if kind.kv_pool:
            from orchestrator.workers.llm_loop import serve_llm

            serve_llm(built.engine, channel)
        else:
            from orchestrator.workers.call_server import serve_calls

            asyncio.run(serve_calls(serve_in_process(spec, built), channel, kind.name, kind.calls))
    finally:
        log.debug("stopped")
        logging.shutdown()
        # No interpreter teardown (seconds for big tensors and library threads), but multiprocessing's own
        # finalizers first: they unlink the semaphores libraries made here (tqdm's lock), which would leak.
        from multiprocessing.util import _exit_function

        _exit_function()
        os._exit(0)


def _exit_with_parent(parent: int) -> None:
    """End this process once its parent is gone (the child is then re-parented)."""
    while os.getppid() == parent:
        time.sleep(PARENT_POLL_S)
    os._exit(0)
