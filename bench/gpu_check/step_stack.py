"""Step 3: the check's stack under `orchestrator run`, every worker capped to its share, through a short mixed load.

On a GPU that is configs/vtuber-24gb.yaml on the models made here, planned and capped for 24 GiB (gpu.memory, the
same target as --gpu-memory 24GiB) on the big card: 16 concurrent chats with 8k-token prompts, 4 realtime voice
sessions, and TTS, ASR and embedding requests at once. The smoke run is configs/demo-tiny.yaml with one of each.
Where the ASR cannot run (an offline host's image lacks CTranslate2 and PyAV), the stack has none, and the load
has no transcriptions and no realtime sessions; the JSON says so. Each worker's
memory is sampled while the load runs (NVML per PID on a GPU; the resident high-water mark on the CPU) and its
peak set beside its share: the goal is no failed request, no restart, and no worker over its share (plus the
stack's tolerance, as the supervisor allows at start).
"""
from __future__ import annotations

import asyncio
import inspect
import io
import subprocess
import sys
import threading
import time
import wave
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import httpx2 as httpx
import numpy as np

from bench.gpu_check import ROOT
from bench.gpu_check.common import Context, Outcome, unavailable
from bench.gpu_check.step_models import folders, stack_path
from orchestrator.net import ProcessExited, free_port, wait_healthy

SENTENCE = "The quick brown fox jumps over the lazy dog. "
SPEECH = "Hello there, what is the weather like today?"


@dataclass(slots=True, frozen=True)
class Load:
    chats: int
    prompt_tokens: int
    max_tokens: int
    sessions: int
    tts: int
    asr: int
    embeddings: int


LOADS = {True: Load(chats=2, prompt_tokens=200, max_tokens=8, sessions=1, tts=1, asr=1, embeddings=1),
         False: Load(chats=16, prompt_tokens=8000, max_tokens=32, sessions=4, tts=4, asr=4, embeddings=4)}


def held(pid: int, cuda: bool) -> int | None:
    """What a worker holds: NVML's bytes for its PID on a GPU (None where NVML cannot see it, as in a container),
    its peak resident set (VmHWM) on the CPU."""
    if cuda:
        from budget.probe import probe_gpus

        seen = [g.processes[pid] for g in probe_gpus().gpus if g.processes.get(pid) is not None]
        return sum(seen) if seen else None
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    return int(next(line for line in status.splitlines() if line.startswith("VmHWM")).split()[1]) * 1024


class Sampler(threading.Thread):
    """Each worker's highest figure while the load runs."""

    def __init__(self, pids: dict[str, int], cuda: bool, every_s: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.pids, self.cuda, self.every_s = pids, cuda, every_s
        self.peak: dict[str, int | None] = {name: None for name in pids}   # None: never seen
        self.samples = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            for name, pid in self.pids.items():
                if (now := held(pid, self.cuda)) is not None:
                    self.peak[name] = max(self.peak[name] or 0, now)
            self.samples += 1
            self.done.wait(self.every_s)


def serve(stack: Path, log: Path, wait_s: float = 240) -> tuple[subprocess.Popen, str]:
    """`orchestrator run STACK` on a free loopback port, its output in `log`; (process, base URL) once /health
    answers."""
    port = free_port()
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "run", str(stack), "--port", str(port)],
                                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_healthy(f"http://127.0.0.1:{port}/health", proc, wait_s, poll_s=0.5)
        return proc, f"http://127.0.0.1:{port}"
    except (ProcessExited, TimeoutError):
        proc.kill()
    raise RuntimeError(f"the stack did not start (exit {proc.poll()}):\n{log.read_text()[-3000:]}")


def run(ctx: Context) -> Outcome:
    from orchestrator.stack_file import load_stack

    stack = load_stack(stack_path(ctx))
    kinds = {m.kind for m in stack.models}
    load, left_out = LOADS[ctx.smoke], {}
    speech = unavailable("speech")
    if "asr" not in kinds or speech:
        load = replace(load, asr=0, sessions=0)
        left_out["asr"] = "no ASR in this stack (CTranslate2 or PyAV not here)" if "asr" not in kinds else speech
    elif stack.voice is None or unavailable("realtime"):
        load = replace(load, sessions=0)
        left_out["realtime"] = unavailable("realtime") or "the stack has no voice pipeline"
    proc, url = serve(stack_path(ctx), ctx.work / "logs" / "stack-server.log")
    try:
        engines = httpx.get(f"{url}/health/engines").json()["engines"]
        workers = {e["name"]: e for e in engines if e["pid"]}
        sampler = Sampler({name: e["pid"] for name, e in workers.items()}, ctx.cuda)
        sampler.start()
        start = time.perf_counter()
        results = asyncio.run(mixed_load(url, stack, load, prompt(ctx, load.prompt_tokens)))
        seconds = time.perf_counter() - start
        sampler.done.set()
        sampler.join()
        after = {e["name"]: e for e in httpx.get(f"{url}/health/engines").json()["engines"]}
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    tolerance = stack.gpu.tolerance
    # where the sampler never saw a worker (NVML blind to its PID), its own after-warm-up figure stands in, with its
    # source (the card's used delta, or torch's reserved bytes: a floor)
    peaks = {name: (sampler.peak[name], "sampled") if sampler.peak[name] is not None else
             (e["actual_bytes"], f"worker's own figure ({e.get('actual_source') or 'unknown'})")
             for name, e in workers.items()}
    rows = [{"model": name, "kind": e["kind"], "pid": e["pid"], "share_bytes": e["planned_bytes"],
             "after_warmup_bytes": e["actual_bytes"], "peak_bytes": peaks[name][0], "peak_source": peaks[name][1],
             "peak_over_share": None if peaks[name][0] is None else round(peaks[name][0] / e["planned_bytes"], 3),
             "restarts": after[name]["restarts"], "state": after[name]["state"]} for name, e in workers.items()]
    # Only a GPU caps a worker; on the CPU the shares are a yardstick and RSS runs 20-50% past them (demo-tiny.yaml)
    failures = [f"{r['model']} peaked at {r['peak_over_share']:.0%} of its share (allowed {1 + tolerance:.0%})"
                for r in rows if ctx.cuda and (r["peak_over_share"] or 0) > 1 + tolerance]
    failures += [f"{r['model']}: no figure for its memory (NVML cannot see its PID and it reported none)"
                 for r in rows if ctx.cuda and r["peak_bytes"] is None]
    failures += [f"{r['model']} restarted {r['restarts']} time(s) (state {r['state']})" for r in rows
                 if r["restarts"] or r["state"] != "ready"]
    errors = [f"{kind}: {error}" for kind, outcomes in results.items() for error in outcomes if error]
    failures += [f"{len(errors)} request(s) failed; first: {errors[0]}"] if errors else []
    served = {kind: sum(1 for o in outcomes if not o) for kind, outcomes in results.items()}
    summary = (f"served {', '.join(f'{n} {kind}' for kind, n in served.items())} in {seconds:.1f} s; peak / share: "
               + ", ".join(f"{r['model']} " + ("unknown" if r['peak_over_share'] is None else
                                                 f"{r['peak_over_share']:.0%}") for r in rows))
    return Outcome({"stack": str(stack_path(ctx)), "load": asdict(load), "left_out": left_out, "tolerance": tolerance,
                    "over_share_judged": ctx.cuda, **({} if ctx.cuda else {"why": "nothing is capped on the CPU"}),
                    "measured_by": "NVML per PID, sampled every 0.25 s" if ctx.cuda else "VmHWM (peak resident set)",
                    "samples": sampler.samples, "load_seconds": round(seconds, 1), "served": served,
                    "errors": errors, "workers": rows}, summary, failures)


def prompt(ctx: Context, tokens: int) -> str:
    """Text that is about `tokens` tokens long in the LLM's own tokenizer."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folders(ctx)["llm"])
    return SENTENCE * max(1, tokens // len(tok(SENTENCE)["input_ids"]))


async def mixed_load(url: str, stack, load: Load, text: str) -> dict[str, list[str | None]]:
    """Everything at once; per request None when it was served, else what went wrong."""
    names = {m.kind: m.name for m in stack.models}
    if load.asr or load.sessions:
        from speech import speak
        audio = speak(SPEECH)
    key = stack.server.api_key
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=600) as client:
        async def chat() -> str | None:
            body = {"model": names["llm"], "max_tokens": load.max_tokens,
                    "messages": [{"role": "user", "content": text}]}
            return refused(await client.post("/v1/chat/completions", json=body))

        async def tts() -> str | None:
            body = {"model": names["tts"], "input": SPEECH, "response_format": "wav"}  # wav: no encoder (PyAV)
            return refused(await client.post("/v1/audio/speech", json=body))

        async def asr() -> str | None:
            files = {"file": ("speech.wav", wav(audio), "audio/wav")}
            return refused(await client.post("/v1/audio/transcriptions", data={"model": names["asr"]}, files=files))

        async def embed() -> str | None:
            return refused(await client.post("/v1/embeddings", json={"model": names["embedding"], "input": [SPEECH]}))

        async def voice() -> str | None:
            from voice_latency import DETECTIONS, session

            # the sessions' transcription model, where voice_latency asks for one: whisper-1 has no live words
            more = ["whisper-1"] if "transcription_model" in inspect.signature(session).parameters else []
            turns = await session(url, key, load.max_tokens, DETECTIONS["server_vad"], [(SPEECH,)], *more)
            # incomplete is an answer cut at max_output_tokens: served
            bad = [t["status"] for t in turns if t["status"] not in ("completed", "incomplete")]
            return f"realtime response {bad[0]}" if bad else None

        groups = {"chat": [chat() for _ in range(load.chats)],
                  "tts": [tts() for _ in range(load.tts if "tts" in names else 0)],
                  "asr": [asr() for _ in range(load.asr)], "embeddings": [embed() for _ in range(load.embeddings)],
                  "realtime": [voice() for _ in range(load.sessions)]}
        groups = {kind: coros for kind, coros in groups.items() if coros}
        flat = await asyncio.gather(*(c for cs in groups.values() for c in cs), return_exceptions=True)
    out, at = {}, 0
    for kind, coros in groups.items():
        out[kind] = [f"{type(r).__name__}: {r}" if isinstance(r, BaseException) else r
                     for r in flat[at:at + len(coros)]]
        at += len(coros)
    return out


def refused(response) -> str | None:
    """None for a 200, else the status and the start of the body."""
    return None if response.status_code == 200 else f"HTTP {response.status_code}: {response.text[:300]}"


def wav(audio: np.ndarray, rate: int = 16000) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.clip(audio, -1, 1) * 32767).astype(np.int16).tobytes())
    return buffer.getvalue()
