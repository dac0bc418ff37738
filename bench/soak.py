"""Soak: the demo stack under `orchestrator run`, 64 streamed chats and 8 realtime voice sessions for a set time.

Chats stream with varied lengths, and every seventh is closed after two chunks. Each voice session plays
spoken turns at real-time pace (espeak-ng): a plain turn, a barge-in (the next line spoken over the
answer), and a close in the middle of an answer followed by a new session. Afterwards it reports what
was served, every error by kind (the goal is none), each process's resident memory at the start, the
middle and the end of the load, and what is left once the load stops: KV blocks in use, running and
waiting sequences, open realtime sessions and their tasks (the goal is 0 for each).

    .venv/bin/python bench/soak.py [--duration 600] [--chats 64] [--sessions 8] [--url URL]
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import random
import re
import sys
import time
from pathlib import Path

import httpx2 as httpx
import numpy as np
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
from hardware import describe  # noqa: E402
from realtime_client import Client  # noqa: E402
from speech import silence, speak  # noqa: E402
from voice_latency import start_stack  # noqa: E402

LINES = ["Hi there, who are you?", "What is your favourite colour?", "Tell me a short joke, please.",
         "Where do you live?"]
QUESTIONS = ["Tell me about your day.", "What is a good name for a cat?", "Sing me a song.", "Hello!"]
RATE = 24000
MEMORY_BAND = 0.10   # each process's resident set at the end within 10% of where it stood early in the load


class Tally:
    def __init__(self) -> None:
        self.served = collections.Counter()
        self.errors = collections.Counter()

    def error(self, kind: str) -> None:
        self.errors[kind] += 1


async def chat_loop(url: str, key: str | None, deadline: float, tally: Tally, seed: int) -> None:
    rng = random.Random(seed)
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=300) as client:
        n = 0
        while time.monotonic() < deadline:
            n += 1
            body = {"model": "qwen3-demo", "stream": True, "max_tokens": rng.randint(8, 48),
                    "messages": [{"role": "user", "content": rng.choice(QUESTIONS)}]}
            close_early = n % 7 == 0
            try:
                async with client.stream("POST", "/v1/chat/completions", json=body) as response:
                    if response.status_code != 200:
                        tally.error(f"chat HTTP {response.status_code}")
                        await response.aread()
                        continue
                    chunks, done = 0, False
                    async for line in response.aiter_lines():
                        if line.startswith("data: {") and '"error"' in line:
                            tally.error("chat stream error event")
                        chunks += line.startswith("data: ")
                        done = done or line == "data: [DONE]"
                        if close_early and chunks >= 2:
                            break
                    if close_early:
                        tally.served["chats closed mid-stream"] += 1
                    elif done:
                        tally.served["chats"] += 1
                    else:
                        tally.error("chat stream ended without [DONE]")
            except httpx.HTTPError as error:
                tally.error(f"chat {type(error).__name__}")


async def answer_events(client: Client, pending: int, tally: Tally) -> list[dict]:
    """Read until `pending` responses are done; count error events and failed responses."""
    events = []
    while pending:
        event = await client.recv(timeout=300)
        events.append(event)
        if event["type"] == "error":
            tally.error(f"realtime error {event['error'].get('code')}")
        elif event["type"] == "response.done":
            pending -= 1
            status = event["response"]["status"]
            if status == "failed":
                tally.error("realtime response failed")
            tally.served[f"voice responses {status}"] += 1
    return events


async def voice_loop(url: str, key: str | None, deadline: float, tally: Tally, seed: int) -> None:
    rng = random.Random(seed)
    utterances = [np.concatenate([silence(0.3, RATE), speak(line, RATE), silence(1.0, RATE)]) for line in LINES]
    turn = 0
    while time.monotonic() < deadline:
        try:
            client = await Client.connect(url, key)
            await client.until("session.created")
            await client.send(type="session.update", session={"max_output_tokens": 24})
            await client.until("session.updated")
            tally.served["voice sessions"] += 1
            while time.monotonic() < deadline:
                turn += 1
                mode = ("plain", "barge-in", "plain", "close")[turn % 4]
                await client.speak(rng.choice(utterances), RATE)
                if mode == "plain":
                    await answer_events(client, 1, tally)
                    continue
                first = await client.until("response.output_audio.delta", timeout=300)
                done_already = sum(e["type"] == "response.done" for e in first)
                if mode == "close":
                    await client.close()
                    tally.served["voice sessions closed mid-answer"] += 1
                    break
                await client.speak(rng.choice(utterances), RATE)  # talk over the answer
                await answer_events(client, 2 - done_already, tally)
                tally.served["voice barge-ins"] += 1
            else:
                await client.close()
        except Exception as error:  # noqa: BLE001  (counted: the goal is that none happen)
            tally.error(f"realtime {type(error).__name__}")


def rss_bytes(pid: int) -> int | None:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    return int(re.search(r"VmRSS:\s+(\d+) kB", text).group(1)) * 1024


def processes(url: str, key: str | None, server_pid: int | None) -> dict[str, int]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    table = httpx.get(url + "/health/engines", headers=headers).json()["engines"]
    found = {e["name"]: e["pid"] for e in table if e.get("pid")}
    if server_pid:
        found["server (VAD in it)"] = server_pid
    return found


def metric(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, re.M)
    return float(match.group(1)) if match else float("nan")


async def after_load(url: str, key: str | None, timeout: float = 60) -> dict[str, float]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    names = {"kv blocks used": 'orchestrator_llm_kv_blocks{state="used"}',
             "sequences running": 'orchestrator_llm_sequences{state="running"}',
             "sequences waiting": 'orchestrator_llm_sequences{state="waiting"}',
             "realtime sessions open": "orchestrator_realtime_sessions",
             "realtime tasks": "orchestrator_realtime_tasks"}
    deadline = time.monotonic() + timeout
    while True:
        text = httpx.get(url + "/metrics", headers=headers).text
        left = {label: metric(text, name) for label, name in names.items()}
        if all(v == 0 for v in left.values()) or time.monotonic() > deadline:
            return left
        await asyncio.sleep(0.5)


async def soak(args, server_pid: int | None) -> dict:
    tally = Tally()
    pids = processes(args.url, args.api_key, server_pid)
    memory = {name: {"before": rss_bytes(pid)} for name, pid in pids.items()}
    start = time.monotonic()
    deadline = start + args.duration
    load = [asyncio.create_task(chat_loop(args.url, args.api_key, deadline, tally, i)) for i in range(args.chats)]
    load += [asyncio.create_task(voice_loop(args.url, args.api_key, deadline, tally, 1000 + i))
             for i in range(args.sessions)]
    for label, at in (("start", min(30.0, args.duration * 0.1)), ("middle", args.duration / 2)):
        await asyncio.sleep(max(0.0, start + at - time.monotonic()))
        for name, pid in pids.items():
            memory[name][label] = rss_bytes(pid)
    await asyncio.sleep(max(0.0, deadline - time.monotonic()))
    for name, pid in pids.items():
        memory[name]["end"] = rss_bytes(pid)
    await asyncio.wait_for(asyncio.gather(*load), 600)  # each loop ends its request or turn in hand
    left = await after_load(args.url, args.api_key)
    restarts = {e["name"]: e["restarts"] for e in httpx.get(
        args.url + "/health/engines", headers={"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    ).json()["engines"]}
    return {"served": dict(tally.served), "errors": dict(tally.errors), "memory": memory, "left": left,
            "restarts": restarts, "elapsed_s": time.monotonic() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=600, help="seconds of load (bounded: at most 3600)")
    parser.add_argument("--chats", type=int, default=64)
    parser.add_argument("--sessions", type=int, default=8)
    parser.add_argument("--stack", type=Path, default=ROOT / "configs/demo-tiny.yaml")
    parser.add_argument("--url", help="a server already running (default: start --stack)")
    parser.add_argument("--api-key", default=os.environ.get("ORCH_API_KEY"))
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/soak.json")
    args = parser.parse_args()
    args.duration = min(args.duration, 3600)
    proc = None
    if args.url is None:
        proc, args.url = start_stack(args.stack, Path("/tmp/soak_stack.log"))
    try:
        result = asyncio.run(soak(args, proc.pid if proc else None))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=60)
    console = Console()
    summary = Table(title=f"Soak: {args.chats} chats + {args.sessions} voice sessions for {args.duration:.0f} s "
                          f"({args.stack.name})")
    summary.add_column("what")
    summary.add_column("count", justify="right")
    for what, count in sorted(result["served"].items()):
        summary.add_row(what, str(count))
    for what, count in sorted(result["errors"].items()) or [("errors", 0)]:
        summary.add_row(f"[red]error: {what}[/red]" if count else what, str(count))
    for what, value in result["left"].items():
        summary.add_row(f"after the load: {what}", f"{value:g}")
    for name, n in result["restarts"].items():
        summary.add_row(f"restarts: {name}", str(n))
    console.print(summary)
    mem = Table(title=f"Resident memory (MiB): flat means end within {MEMORY_BAND:.0%} of start")
    for column in ("process", "before load", "start", "middle", "end", "end / start", "flat"):
        mem.add_column(column, justify="left" if column == "process" else "right")
    for name, m in result["memory"].items():
        ratio = m["end"] / m["start"] if m.get("end") and m.get("start") else float("nan")
        m["flat"] = abs(ratio - 1) <= MEMORY_BAND
        mem.add_row(name, *(f"{(m.get(k) or 0) / 2**20:.0f}" for k in ("before", "start", "middle", "end")),
                    f"{ratio:.3f}", "yes" if m["flat"] else "[red]no[/red]")
    console.print(mem)
    args.out.write_text(json.dumps({"hardware": describe(), "stack": args.stack.name, "duration_s": args.duration,
                                    "chats": args.chats, "sessions": args.sessions, "memory_band": MEMORY_BAND,
                                    **result}, indent=2))
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
