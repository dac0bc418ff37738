"""End of speech to first audio over /v1/realtime, with N sessions each playing a spoken dialogue at real-time pace.

Starts `orchestrator run STACK` as a user would (default configs/demo.yaml, the real demo, whose models
are fetched if missing), or measures a server already running (--url). Each session speaks the dialogue's lines
(espeak-ng, 24 kHz PCM16, 100 ms appends at real-time pace) and waits for each answer to end before the
next line. Per turn it takes the client's latency, from sending the last voiced sample to receiving the
first audio delta, and the server's breakdown from `response.done` (VAD: last voiced sample in to
speech_stopped, the end-of-turn stage; ASR; LLM to its first token; first token to first audio).

Each turn detection (--turn-detection, default server_vad with 500 ms of silence and semantic_vad) runs the
same dialogue, and then the mid-sentence set: lines with a 600 ms pause inside a sentence, where a cut (the
turn ended at the pause, so the line was committed as two turns) is counted. Sessions ask for a streaming
transcription model (--transcription-model, default gpt-4o-transcribe), so the first live word's delay after
the first voiced sample is measured too.

--asr-batch 1 4 runs the whole set once per ASR batch size (the stack's Whisper `batch_size` rewritten in a copy
of the stack file): one at a time beside batched, in one run.

    .venv/bin/python bench/voice_latency.py [--sessions 1 4 8] [--turn-detection server_vad semantic_vad]
                                            [--asr-batch 1 4]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import yaml
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
from hardware import describe  # noqa: E402
from orchestrator.net import ProcessExited, free_port, wait_healthy  # noqa: E402
from realtime_client import Client, pcm16_b64  # noqa: E402
from speech import silence, speak, voiced_span  # noqa: E402

DIALOGUE = ["Hi there, who are you?", "What is your favourite colour?", "Tell me a short joke, please."]
MID_SENTENCE = [("I would like to order a pizza with", "mushrooms and olives."),
                ("Can you tell me about the", "history of the Roman empire?"),
                ("My favourite animal is the", "elephant, because it is clever.")]
PAUSE_S = 0.6
DETECTIONS = {"server_vad": {"type": "server_vad", "silence_duration_ms": 500},
              "semantic_vad": {"type": "semantic_vad", "eagerness": "auto"}}
RATE, CHUNK_MS = 24000, 100
STAGES = ("vad_ms", "asr_ms", "llm_first_token_ms", "first_audio_ms")


def start_stack(stack: Path, log: Path, demo: Path) -> tuple[subprocess.Popen, str]:
    """`orchestrator run STACK` on a free loopback port, the models of `demo` (its name) made or fetched first;
    (process, base URL)."""
    port = free_port()
    models = Path(os.environ.get("ORCH_DEMO_MODELS", ROOT / ".demo-models"))
    real = Path(os.environ.get("ORCH_REAL_MODELS", ROOT / ".demo-models" / "real"))
    if demo.name == "demo-tiny.yaml":
        from orchestrator.demo.__main__ import build_demo_models
        build_demo_models(models)
    elif demo.name in ("demo.yaml", "demo-qwen.yaml"):
        from orchestrator.demo.real_models import GROUPS, assemble
        assemble(real, GROUPS["demo-qwen" if "qwen" in demo.name else "demo"])
    env = {**os.environ, "ORCH_DEMO_MODELS": str(models), "ORCH_REAL_MODELS": str(real)}
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "run", str(stack), "--port", str(port)],
                                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_healthy(f"http://127.0.0.1:{port}/health", proc, 600, poll_s=0.5)
        return proc, f"http://127.0.0.1:{port}"
    except (ProcessExited, TimeoutError):
        proc.kill()
    raise SystemExit(f"the stack did not start:\n{log.read_text()[-3000:]}")


def line_audio(parts: tuple[str, ...]) -> np.ndarray:
    """A line's speech, its parts PAUSE_S apart, after a little silence and with enough after it to end the turn."""
    pieces = [silence(0.3, RATE)]
    for i, part in enumerate(parts):
        pieces += [silence(PAUSE_S, RATE)] * (i > 0) + [speak(part, RATE)]
    return np.concatenate([*pieces, silence(1.5, RATE)])


async def session(url: str, key: str | None, max_tokens: int, detection: dict, lines: list[tuple[str, ...]],
                  transcription_model: str) -> list[dict]:
    """Play the lines; one record per line."""
    client = await Client.connect(url, key)
    await client.until("session.created")
    await client.send(type="session.update", session={
        "max_output_tokens": max_tokens,
        "audio": {"input": {"turn_detection": detection, "transcription": {"model": transcription_model}}}})
    await client.until("session.updated")
    turns = []
    for parts in lines:
        audio = line_audio(parts)
        first_voiced, last_voiced = voiced_span(audio)[0], voiced_span(audio)[1] - 1
        step = RATE * CHUNK_MS // 1000
        speech_start = speech_end = None
        reader = asyncio.create_task(answered(client))
        start = time.monotonic()
        for i, at in enumerate(range(0, len(audio), step)):
            await asyncio.sleep(max(start + i * CHUNK_MS / 1000 - time.monotonic(), 0))
            await client.send(type="input_audio_buffer.append", audio=pcm16_b64(audio[at:at + step]))
            if speech_start is None and at + step > first_voiced:
                speech_start = time.perf_counter()
            if speech_end is None and at + step > last_voiced:
                speech_end = time.perf_counter()
        events = await reader
        answered_id = events[-1]["response"]["id"]
        answer = events[next(i for i, e in enumerate(events)
                             if e["type"] == "response.created" and e["response"]["id"] == answered_id):]
        first_audio = next((e["received_at"] for e in answer if e["type"] == "response.output_audio.delta"), None)
        first_word = next((e["received_at"] for e in events
                           if e["type"] == "conversation.item.input_audio_transcription.delta"), None)
        done = events[-1]
        turns.append({"client_ms": (first_audio - speech_end) * 1000 if first_audio else None,
                      "first_word_ms": (first_word - speech_start) * 1000 if first_word else None,
                      "status": done["response"]["status"],
                      "cut": sum(e["type"] == "input_audio_buffer.committed" for e in events) > 1,
                      **done.get("latency", {})})
    await client.close()
    return turns


async def answered(client: Client) -> list[dict]:
    """Events up to the response that answers the whole line: one cut short by the line's own rest is skipped, and so
    is the end of one created before this line began (the last line's second half, heard as a turn of its own)."""
    events = []
    while True:
        events += await client.until("response.done", timeout=300)
        done = events[-1]["response"]
        created = {e["response"]["id"] for e in events if e["type"] == "response.created"}
        if done["status"] != "cancelled" and done["id"] in created:
            return events


async def run_level(url: str, key: str | None, sessions: int, max_tokens: int, detection: dict,
                    lines: list[tuple[str, ...]], transcription_model: str) -> list[dict]:
    """Every session's turns; a session that failed counts as one failed turn per line (and says why)."""
    results = await asyncio.gather(*(session(url, key, max_tokens, detection, lines, transcription_model)
                                     for _ in range(sessions)), return_exceptions=True)
    for failed in (r for r in results if isinstance(r, BaseException)):
        print(f"a session failed: {failed!r}", file=sys.stderr)
    return [turn for turns in results for turn in
            ([{"status": "failed", "client_ms": None, "first_word_ms": None, "cut": False}] * len(lines)
             if isinstance(turns, BaseException) else turns)]


def pct(values: list[float], q: float) -> float:
    values = sorted(v for v in values if v is not None)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))] if values else float("nan")


def variant(stack: Path, batch: int | None, turn_window: str | None) -> Path:
    """A copy of the stack file beside it whose ASR models decode at most `batch` utterances at once (if given) and
    whose voice: section sets turn_window (if given)."""
    doc = yaml.safe_load(stack.read_text())
    for model in doc["models"]:
        if model.get("kind") == "asr" and batch is not None:
            model["batch_size"] = batch
    if turn_window is not None:
        doc.setdefault("voice", {})["turn_window"] = turn_window
    copy = stack.with_name(f".{stack.stem}-asr-batch{batch}-{turn_window}.yaml")
    copy.write_text(yaml.safe_dump(doc, sort_keys=False))
    return copy


def measure(args: argparse.Namespace, url: str, asr_batch: int | None) -> list[dict]:
    """Every turn detection at every session count against one running server; one row each."""
    dialogue, mid_sentence = DIALOGUE[:args.lines], MID_SENTENCE[:args.lines]
    rows = []
    for name in args.turn_detection:
        for n in args.sessions:
            level = (args.api_key, n, args.max_tokens, DETECTIONS[name])
            turns = asyncio.run(run_level(url, *level, [(line,) for line in dialogue], args.transcription_model))
            mid = asyncio.run(run_level(url, *level, mid_sentence, args.transcription_model))
            row = {"asr_batch": asr_batch, "turn_detection": name, "sessions": n, "turns": len(turns),
                   # incomplete is an answer cut at max_output_tokens: spoken, not an error
                   "errors": sum(t["status"] not in ("completed", "incomplete") or t["client_ms"] is None
                                 for t in turns + mid),
                   "statuses": dict(Counter(t["status"] + ("" if t["client_ms"] else " (no audio)")
                                            for t in turns + mid)),
                   "client_p50_ms": pct([t["client_ms"] for t in turns], 0.5),
                   "client_p95_ms": pct([t["client_ms"] for t in turns], 0.95),
                   "first_word_p50_ms": pct([t["first_word_ms"] for t in turns + mid], 0.5),
                   "server_total_p50_ms": pct([t.get("total_ms") for t in turns], 0.5),
                   "mid_sentence_lines": len(mid), "mid_sentence_cuts": sum(t["cut"] for t in mid)}
            totals = sum(t.get("total_ms", 0) for t in turns) or 1
            for stage in STAGES:
                row[f"{stage.removesuffix('_ms')}_p50_ms"] = pct([t.get(stage) for t in turns], 0.5)
                row[f"{stage.removesuffix('_ms')}_p95_ms"] = pct([t.get(stage) for t in turns], 0.95)
                row[f"{stage.removesuffix('_ms')}_share"] = sum(t.get(stage, 0) for t in turns) / totals
            rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--stack", type=Path, default=ROOT / "configs/demo.yaml")
    parser.add_argument("--url", help="a server already running (default: start --stack)")
    parser.add_argument("--api-key", default=os.environ.get("ORCH_API_KEY"))
    parser.add_argument("--max-tokens", type=int, default=32, help="each answer's max_output_tokens")
    parser.add_argument("--turn-detection", nargs="+", choices=list(DETECTIONS), default=list(DETECTIONS))
    parser.add_argument("--transcription-model", default="gpt-4o-transcribe",
                        help="the sessions' input transcription model (whisper-1: no live words)")
    parser.add_argument("--asr-batch", type=int, nargs="+",
                        help="run once per ASR batch size, the stack's own otherwise (not with --url)")
    parser.add_argument("--turn-window", choices=["whole", "fitted"],
                        help="the stack's voice.turn_window (the stack's own otherwise; not with --url)")
    parser.add_argument("--lines", type=int, default=len(DIALOGUE),
                        help="play only the first N lines of the dialogue and of the mid-sentence set")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/voice_latency.json")
    args = parser.parse_args()
    rows = []
    if args.url is not None:
        rows = measure(args, args.url, None)
    for batch in ([] if args.url else args.asr_batch or [None]):
        stack = args.stack if batch is None and args.turn_window is None else \
            variant(args.stack, batch, args.turn_window)
        proc, url = start_stack(stack, Path("/tmp/voice_latency_stack.log"), args.stack)
        try:
            rows += measure(args, url, batch)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
            if stack != args.stack:
                stack.unlink()
    table = Table(title=f"/v1/realtime end of speech to first audio ({args.stack.name}; ms; share of the server's "
                        f"total in brackets)")
    for column in ("ASR batch", "turn detection", "sessions", "turns", "errors", "client p50", "client p95",
                   "end of turn (VAD) p50", "ASR p50", "LLM first token p50", "first audio p50", "first live word p50",
                   "mid-sentence cuts"):
        table.add_column(column, justify="right")
    for r in rows:
        table.add_row(str(r["asr_batch"] or "stack's"), r["turn_detection"], str(r["sessions"]), str(r["turns"]),
                      str(r["errors"]), f"{r['client_p50_ms']:.0f}", f"{r['client_p95_ms']:.0f}",
                      *(f"{r[s + '_p50_ms']:.0f} ({r[s + '_share']:.0%})" for s in
                        ("vad", "asr", "llm_first_token", "first_audio")),
                      f"{r['first_word_p50_ms']:.0f}", f"{r['mid_sentence_cuts']} of {r['mid_sentence_lines']}")
    Console().print(table)
    args.out.write_text(json.dumps({"hardware": describe(), "stack": str(args.stack.relative_to(ROOT))
                                    if args.stack.is_relative_to(ROOT) else str(args.stack),
                                    "dialogue": DIALOGUE[:args.lines], "mid_sentence": MID_SENTENCE[:args.lines],
                                    "pause_s": PAUSE_S, "transcription_model": args.transcription_model,
                                    "turn_window": args.turn_window or "the stack's",
                                    "turn_detection": {n: DETECTIONS[n] for n in args.turn_detection},
                                    "max_output_tokens": args.max_tokens, "rows": rows},
                                   indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
