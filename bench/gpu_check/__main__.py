"""`python -m bench.gpu_check [--cpu-smoke] [--out DIR]`: every GPU-only check in order, most valuable first, each in
its own time-boxed process group.

What the run needs is checked first (bench/gpu_check/preflight.py; exit 3 with what to do). Each step's row (status,
summary, data, traceback, the last 2 KB of its log) goes into DIR/gpu-<device>.json as soon as the step ends, and
every step's whole log into DIR/gpu-<device>.log, so a later failure, a timeout or a lost machine loses nothing; a
markdown table (DIR/gpu-<device>.md) closes the run. Three files, no folders: all of it comes back from a lent
machine. Without a GPU it refuses (exit 2) unless given --cpu-smoke, which runs the same code paths with tiny
shapes on the CPU. Exit 0 when every step passed or was skipped for a stated reason, 1 otherwise.
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
from bench.gpu_check.common import (SIMULATE_ENV, TAIL_BYTES, StepResult, environment, partial_path, result_name,
                                    write_json)


@dataclass(slots=True, frozen=True)
class Step:
    name: str
    title: str
    gpu_s: int      # its time box on an H100/H200 (the run's budget, 390 s, ends the last of them early)
    smoke_s: int    # and on the CPU smoke run (~2 minutes in all when idle): room for a 2-core machine others share


STEPS = (
    Step("kernels", "1. Triton kernels natively: paged attention bf16/fp16/fp32, fp8 KV store, quantized matmul",
         70, 90),
    Step("graphs", "2. CUDA-graph decode against eager: logits within tolerance, batches padded alike", 25, 60),
    Step("models", "   random-weight models at real size (tiny on the smoke run), made once", 50, 90),
    Step("decode", "3. single-stream decode against the weight + KV read roofline at 256, 4k and 32k tokens", 65, 60),
    Step("throughput", "4. nano-vllm's workload: ours beside transformers' continuous batching", 40, 90),
    Step("planner", "5. planner estimate beside measured memory, per model and part", 70, 120),
    Step("stack", "6. the 24 GB stack under `orchestrator run`, capped, mixed load: each peak beside its share",
         70, 120),
    Step("voice", "7. voice latency (bench/voice_latency.py), 1 and 8 sessions, if time is left", 60, 120),
)
NAMES = [s.name for s in STEPS]
BUDGET = {False: 390.0, True: 750.0}   # GPU: 6.5 minutes of steps, so the whole call stays under 7
LOG_CAP = 3 << 19                      # of each log in the combined log (head and tail): 9 logs stay < 16 MiB
NO_GPU = ("no CUDA GPU here (torch.cuda.is_available() is false): this check measures what only a GPU can show. "
          "Run it on a machine with an NVIDIA GPU, or pass --cpu-smoke to run the same code paths with tiny shapes "
          "on the CPU")


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="gpu-check", description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny shapes on the CPU (the test suite's run)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results",
                        help="folder for gpu-<device>.json, .md and .log (the smoke run writes gpu-smoke-cpu.*)")
    parser.add_argument("--work", type=Path, help="scratch folder for models and logs, kept between runs "
                        "(default: /dev/shm/gpu-check where it has room, else ~/.cache/voice-orchestrator/...)")
    parser.add_argument("--budget", type=float, help=f"seconds for all steps (default {BUDGET[False]:.0f} on a GPU, "
                        f"{BUDGET[True]:.0f} smoke)")
    parser.add_argument("--steps", type=lambda s: s.split(","), default=NAMES,
                        help=f"comma-separated subset, in this order: {','.join(NAMES)}")
    parser.add_argument("--simulate-failure", choices=NAMES, help="make this step raise at its start")
    args = parser.parse_args(argv)
    unknown = [s for s in args.steps if s not in NAMES]
    if unknown:
        parser.error(f"unknown step(s) {', '.join(unknown)}; the steps are {', '.join(NAMES)}")
    return args


def default_work(smoke: bool) -> Path:
    """tmpfs where it has room for the models (an 8B checkpoint is 16.4 GB: it is written and read at memory speed
    there, not the disk's), else the user's cache."""
    shm = Path("/dev/shm")
    if not smoke and shm.is_dir():
        stat = os.statvfs(shm)
        if stat.f_bavail * stat.f_frsize > 24 * 2**30:
            return shm / "gpu-check"
    return Path.home() / ".cache/voice-orchestrator" / ("gpu-check-smoke" if smoke else "gpu-check")


def run_step(step: Step, args: argparse.Namespace, device: str, timeout: float) -> StepResult:
    """The step in a fresh process group, killed whole (servers and workers too) when its time box ends."""
    outcome_file = args.work / f"outcome-{step.name}.json"
    log = step_log(args.work, step.name)
    log.parent.mkdir(parents=True, exist_ok=True)
    for old in log.parent.glob(f"{step.name}-*.log"):  # what this step's servers wrote on an earlier run
        old.unlink()
    outcome_file.unlink(missing_ok=True)
    partial_path(args.work, step.name).unlink(missing_ok=True)
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
    row = StepResult(step.name, step.title.strip(), "error", seconds, "", log=str(log), log_tail=_tail(log))
    if outcome_file.is_file():
        outcome = json.loads(outcome_file.read_text())
        row.data, row.summary, row.failures = outcome["data"], outcome["summary"], outcome["failures"]
        row.error, row.traceback = outcome["error"], outcome.get("traceback")
        row.status = ("skipped" if outcome.get("skipped") else "error" if row.error else
                      "fail" if row.failures else "pass")
    if timed_out:
        row.status, row.error = "timeout", f"ran past its time box of {timeout:.0f} s; killed"
        if partial_path(args.work, step.name).is_file():   # what it measured before the box ended
            row.data = {"partial": json.loads(partial_path(args.work, step.name).read_text())}
    elif row.error is None and not outcome_file.is_file():
        row.error = f"exited with code {proc.returncode} before writing its result (see log_tail)"
    return row


def step_log(work: Path, name: str) -> Path:
    """A step's own log; what its servers write goes beside it as <name>-*.log."""
    return work / "logs" / f"{name}.log"


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


def _tail(log: Path) -> str:
    if not log.is_file():
        return "(no log)"
    with open(log, "rb") as f:
        f.seek(max(0, log.stat().st_size - TAIL_BYTES))
        return f.read().decode(errors="replace")


def combined_log(work: Path, rows: list[StepResult], path: Path) -> None:
    """Every finished step's logs in one file under --out (a lent machine sends back few files): each log's head and
    tail where it is longer than LOG_CAP."""
    partial = path.with_suffix(".partial")
    with open(partial, "w") as out:
        for row in rows:
            logs = [step_log(work, row.step), *sorted(step_log(work, row.step).parent.glob(f"{row.step}-*.log"))]
            for log in (p for p in logs if p.is_file()):
                data = log.read_bytes()
                if len(data) > LOG_CAP:
                    data = (data[:LOG_CAP // 4] + f"\n[... {len(data) - LOG_CAP:,} bytes left out ...]\n".encode()
                            + data[-3 * LOG_CAP // 4:])
                out.write(f"===== {row.step}: {log.name} ({row.status}) =====\n")
                out.write(data.decode(errors="replace") + "\n")
    partial.replace(path)


def table(rows: list[StepResult], env: dict, smoke: bool, wall: float) -> str:
    """The run as markdown: the hardware line, then one row per step with its status and what it found."""
    head = (f"GPU check{' (--cpu-smoke: tiny shapes on the CPU, no GPU results)' if smoke else ''} on "
            f"{env['device']}; driver {env['driver'] or 'none'}, torch {env['torch']}, CUDA {env['cuda'] or 'none'}, "
            f"Triton {env['triton']}, Python {env['python']}; {wall:.0f} s\n\n")
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

    from bench.gpu_check import preflight

    if not args.cpu_smoke and not torch.cuda.is_available() and not Path("/dev/nvidiactl").exists():
        print(f"gpu-check: {NO_GPU}", file=sys.stderr)
        return 2
    device = "cpu" if args.cpu_smoke else "cuda:0"
    args.work = (args.work or default_work(args.cpu_smoke)).resolve()
    args.work.mkdir(parents=True, exist_ok=True)
    env = environment(device)
    name = result_name(env, args.cpu_smoke)
    json_path, md_path, log_path = (args.out / f"{name}.{ext}" for ext in ("json", "md", "log"))
    budget = args.budget or BUDGET[args.cpu_smoke]
    start = time.perf_counter()
    checked = preflight.check(not args.cpu_smoke, args.work, env.get("gpu"))
    record = {"environment": env, "cpu_smoke": args.cpu_smoke, "budget_s": budget, "work": str(args.work),
              "preflight": checked.problems, "steps": {}}
    write_json(json_path, record)
    if checked.problems:
        for problem in checked.problems:
            print(f"gpu-check: {problem}", file=sys.stderr)
        print(f"gpu-check: nothing run; wrote {json_path}", file=sys.stderr)
        return 3
    gpu = env.get("gpu") or {}
    print(f"gpu-check on {env['device']}: torch {env['torch']}, CUDA {env['cuda']}, Triton {env['triton']}, driver "
          f"{env['driver']}" + (f", {gpu['free_bytes'] / 2**30:.1f} GiB free, {len(gpu['processes'])} other "
                                f"process(es)" if gpu.get("free_bytes") else ""), flush=True)
    rows: list[StepResult] = []
    markdown = ""
    chosen = [s for s in STEPS if s.name in args.steps]
    for i, step in enumerate(chosen, 1):
        left = budget - (time.perf_counter() - start)
        box = min(step.smoke_s if args.cpu_smoke else step.gpu_s, left)
        if box < 5:
            row = StepResult(step.name, step.title.strip(), "skipped", 0.0, "",
                             error=f"the run's budget of {budget:.0f} s is spent")
        else:
            print(f"[{i}/{len(chosen)}] {step.title.strip()}: time box {box:.0f} s, budget left {left:.0f} s",
                  flush=True)
            row = run_step(step, args, device, box)
        print(f"      {row.status} in {row.seconds:.0f} s: {row.error or row.summary}", flush=True)
        rows.append(row)
        record["steps"][step.name] = row.to_json()
        record["wall_s"] = round(time.perf_counter() - start, 1)
        write_json(json_path, record)
        combined_log(args.work, rows, log_path)
        markdown = table(rows, env, args.cpu_smoke, time.perf_counter() - start)
        md_path.write_text(markdown)
    print("\n" + markdown, flush=True)
    print(f"wrote {json_path}, {md_path.name} and {log_path.name}")
    return 0 if all(r.status in ("pass", "skipped") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
