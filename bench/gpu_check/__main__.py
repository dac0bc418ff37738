"""`python -m bench.gpu_check [--cpu-smoke]`: every GPU-only check in order, each in its own time-boxed process.

Each step's result (with device, driver, torch and CUDA versions) is written to the results JSON as soon as the step
ends, so a later failure or timeout loses nothing; a markdown table of every step closes the run. Without a GPU it
refuses (exit 2) unless given --cpu-smoke, which runs the same code paths with tiny shapes on the CPU.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bench.gpu_check import ROOT
from bench.gpu_check.common import SIMULATE_ENV, StepResult, environment, result_name, write_json


@dataclass(slots=True, frozen=True)
class Step:
    name: str
    title: str
    gpu_s: int      # its time box on an H100/H200 (they sum to 540 s)
    smoke_s: int    # and on the CPU smoke run: room for a busy 2-core machine (the run takes ~85 s when idle)


STEPS = (
    Step("kernels", "1. Triton kernels and CUDA-only tests (natively); CUDA-graph decode = eager decode", 50, 45),
    Step("models", "   random-weight models at real size (tiny on the smoke run), made once", 110, 45),
    Step("planner", "2. planner estimate beside measured memory, per model and part", 100, 60),
    Step("stack", "3. the 24 GB VTuber stack under `orchestrator run`, capped, under load", 100, 60),
    Step("decode", "4. decode tokens/s vs roofline, with and without CUDA graphs; vs HF continuous batching", 80, 45),
    Step("voice", "5. voice latency (bench/voice_latency.py), 1 and 8 sessions", 100, 60),
)
NAMES = [s.name for s in STEPS]
NO_GPU = ("no CUDA GPU here (torch.cuda.is_available() is false): this check measures what only a GPU can show. "
          "Run it on a machine with an NVIDIA GPU, or pass --cpu-smoke to run the same code paths with tiny shapes "
          "on the CPU")


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="gpu-check", description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny shapes on the CPU (the test suite's run)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results",
                        help="folder for gpu-<device>.json and .md (the smoke run writes gpu-smoke-cpu.*)")
    parser.add_argument("--work", type=Path, help="scratch folder for models and logs, kept between runs "
                        "(default: /dev/shm/gpu-check on a GPU machine, ~/.cache/voice-orchestrator/gpu-check-smoke)")
    parser.add_argument("--budget", type=float, help="seconds for all steps (default 570 on a GPU, 315 smoke)")
    parser.add_argument("--steps", type=lambda s: s.split(","), default=NAMES,
                        help=f"comma-separated subset, in this order: {','.join(NAMES)}")
    parser.add_argument("--simulate-failure", choices=NAMES, help="make this step raise at its start")
    args = parser.parse_args(argv)
    unknown = [s for s in args.steps if s not in NAMES]
    if unknown:
        parser.error(f"unknown step(s) {', '.join(unknown)}; the steps are {', '.join(NAMES)}")
    return args


def default_work(smoke: bool) -> Path:
    """tmpfs where it has room for an 8B checkpoint (it loads at memory speed), else the user's cache."""
    shm = Path("/dev/shm")
    if not smoke and shm.is_dir():
        stat = os.statvfs(shm)
        if stat.f_bavail * stat.f_frsize > 48 * 2**30:
            return shm / "gpu-check"
    return Path.home() / ".cache/voice-orchestrator" / ("gpu-check-smoke" if smoke else "gpu-check")


def run_step(step: Step, args: argparse.Namespace, device: str, timeout: float, env: dict) -> StepResult:
    """The step in a fresh process group, killed whole (servers and workers too) when its time box ends."""
    outcome_file = args.work / f"outcome-{step.name}.json"
    log = args.work / "logs" / f"{step.name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    outcome_file.unlink(missing_ok=True)
    child_env = {"COLUMNS": "160", **os.environ, "PYTHONUNBUFFERED": "1"}  # rich tables readable in the logs
    if args.cpu_smoke:
        child_env["TRITON_INTERPRET"] = "1"   # the Triton kernels in the interpreter, as the CPU suite runs them
    else:
        child_env.pop("TRITON_INTERPRET", None)  # natively: an inherited interpreter flag would hide the GPU kernels
    if args.simulate_failure:
        child_env[SIMULATE_ENV] = args.simulate_failure
    command = [sys.executable, "-m", "bench.gpu_check.child", step.name, "--work", str(args.work), "--device", device,
               "--out", str(outcome_file)] + (["--smoke"] if args.cpu_smoke else [])
    start = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(command, cwd=ROOT, env=child_env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            proc.wait(timeout=timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            timed_out = True
        _end_group(proc)
    seconds = round(time.perf_counter() - start, 1)
    row = StepResult(step.name, step.title.strip(), "error", seconds, "", env, log=str(log))
    if outcome_file.is_file():
        outcome = json.loads(outcome_file.read_text())
        row.data, row.summary, row.failures = outcome["data"], outcome["summary"], outcome["failures"]
        row.error = outcome["error"]
        row.status = "error" if row.error else "fail" if row.failures else "pass"
    if timed_out:
        row.status, row.error = "timeout", f"ran past its time box of {timeout:.0f} s; killed"
    elif row.error is None and not outcome_file.is_file():
        row.error = f"exited with code {proc.returncode} before writing its result: {_tail(log)}"
    return row


def _end_group(proc: subprocess.Popen) -> None:
    """Whatever the step left running (a server, its workers): SIGTERM to the group, then SIGKILL."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        time.sleep(0.5)  # let the group's other members see the signal before we look again


def _tail(log: Path, chars: int = 1500) -> str:
    return log.read_text(errors="replace")[-chars:].strip() if log.is_file() else "(no log)"


def table(rows: list[StepResult], env: dict, smoke: bool, wall: float) -> str:
    """The run as markdown: the hardware line, then one row per step with its status and what it found."""
    head = (f"GPU check{' (--cpu-smoke: tiny shapes on the CPU, no GPU results)' if smoke else ''} on "
            f"{env['device']}; driver {env['driver'] or 'none'}, torch {env['torch']}, CUDA {env['cuda'] or 'none'}, "
            f"Triton {env['triton']}; {wall:.0f} s\n\n")
    lines = ["| step | status | seconds | result |", "|---|---|---:|---|"]
    for r in rows:
        text = r.error if r.error else "; ".join([r.summary, *r.failures]) if r.failures else r.summary
        lines.append(f"| {r.title} | {r.status.upper() if r.status != 'pass' else 'pass'} | {r.seconds:.0f} | "
                     f"{text.replace('|', '/').replace(chr(10), ' ')} |")
    details = "".join(f"\n{r.title}\n\n{r.data['markdown']}" for r in rows if "markdown" in r.data)
    return head + "\n".join(lines) + "\n" + details


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    import torch

    if not args.cpu_smoke and not torch.cuda.is_available():
        print(f"gpu-check: {NO_GPU}", file=sys.stderr)
        return 2
    device = "cpu" if args.cpu_smoke else "cuda:0"
    args.work = (args.work or default_work(args.cpu_smoke)).resolve()
    args.work.mkdir(parents=True, exist_ok=True)
    env = environment(device)
    name = result_name(env, args.cpu_smoke)
    json_path, md_path = args.out / f"{name}.json", args.out / f"{name}.md"
    budget = args.budget or (315.0 if args.cpu_smoke else 570.0)
    start = time.perf_counter()
    record = {"environment": env, "cpu_smoke": args.cpu_smoke, "budget_s": budget, "work": str(args.work),
              "steps": {}}
    rows: list[StepResult] = []
    chosen = [s for s in STEPS if s.name in args.steps]
    for i, step in enumerate(chosen, 1):
        left = budget - (time.perf_counter() - start)
        box = min(step.smoke_s if args.cpu_smoke else step.gpu_s, left)
        if box < 5:
            row = StepResult(step.name, step.title.strip(), "skipped", 0.0, "", env,
                             error=f"the run's budget of {budget:.0f} s is spent")
        else:
            print(f"[{i}/{len(chosen)}] {step.title.strip()}: time box {box:.0f} s, budget left {left:.0f} s",
                  flush=True)
            row = run_step(step, args, device, box, env)
        print(f"      {row.status} in {row.seconds:.0f} s: {row.error or row.summary}", flush=True)
        rows.append(row)
        record["steps"][step.name] = row.to_json()
        record["wall_s"] = round(time.perf_counter() - start, 1)
        write_json(json_path, record)
    markdown = table(rows, env, args.cpu_smoke, time.perf_counter() - start)
    md_path.write_text(markdown)
    print("\n" + markdown, flush=True)
    print(f"wrote {json_path} and {md_path}")
    return 0 if all(r.status == "pass" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
