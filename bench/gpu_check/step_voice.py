"""Step 5: end of speech to first audio over /v1/realtime on the check's stack, through bench/voice_latency.py.

On a GPU: the real-size stack at 1 and 8 sessions, two lines of the dialogue and two of the mid-sentence set each,
server VAD. The smoke run: demo-tiny's models, 1 session, one line of each. Skipped where the ASR cannot run (an
offline host's image lacks CTranslate2 and PyAV, too large to carry) or espeak-ng cannot speak the lines.
"""
from __future__ import annotations

import json
import subprocess
import sys

from bench.gpu_check import ROOT
from bench.gpu_check.common import Context, Outcome, Skipped, unavailable
from bench.gpu_check.step_models import stack_path

SESSIONS = {True: [1], False: [1, 8]}
LINES = {True: 1, False: 2}


def run(ctx: Context) -> Outcome:
    from orchestrator.stack_file import load_stack

    why = unavailable("asr") or unavailable("realtime") or unavailable("speech")
    if why or load_stack(stack_path(ctx)).voice is None:
        raise Skipped(f"no voice pipeline on this machine: {why or 'the stack has none'}")
    out = ctx.work / "voice_latency.json"
    out.unlink(missing_ok=True)
    command = [sys.executable, str(ROOT / "bench/voice_latency.py"), "--stack", str(stack_path(ctx)),
               "--sessions", *map(str, SESSIONS[ctx.smoke]), "--turn-detection", "server_vad",
               "--lines", str(LINES[ctx.smoke]), "--out", str(out)]
    proc = subprocess.run(command, cwd=ROOT)  # its table goes to this step's log; the driver's time box bounds it
    if proc.returncode != 0:
        raise RuntimeError(f"bench/voice_latency.py exited with code {proc.returncode}; see this step's log")
    result = json.loads(out.read_text())
    rows = result["rows"]
    failures = [f"{r['sessions']} session(s): {r['turns']} of {r['sessions'] * LINES[ctx.smoke]} turns answered"
                for r in rows if r["turns"] != r["sessions"] * LINES[ctx.smoke]]
    failures += [f"{r['sessions']} session(s): no first audio measured" for r in rows
                 if r["client_p50_ms"] != r["client_p50_ms"]]  # NaN: no turn had audio
    summary = "; ".join(f"{r['sessions']} session(s): client p50 {r['client_p50_ms']:.0f} ms, p95 "
                        f"{r['client_p95_ms']:.0f} ms (LLM first token p50 {r['llm_first_token_p50_ms']:.0f} ms)"
                        for r in rows)
    return Outcome({"command": command[1:], "voice_latency": result}, summary, failures)
