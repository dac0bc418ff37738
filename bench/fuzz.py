"""Fuzz the server as an outside tester would: a bounded schemathesis run against its /openapi.json plus a hand-made
corpus of hostile requests, counting cases tried, 5xx answers, errors not in the OpenAI shape, and tracebacks in
the server's log (the goal is 0 for each).

Starts `orchestrator run configs/demo-tiny.yaml` (random-weight models: the point is the server, not the
answers) with an API key. schemathesis is not a dependency of the project: `pip install schemathesis`.

    .venv/bin/python bench/fuzz.py [--max-time 120] [--max-examples 50]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx2 as httpx
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "bench")]
from hardware import describe  # noqa: E402
from test_hostile_input import BAD  # noqa: E402  (the tests' table of bad fields, re-aimed at the demo's models)

KEY = "fuzz-key"
SHAPE = {"message", "type", "param", "code"}
EXTRA = [  # (method, route, body) the schema does not describe: broken JSON, wrong types, huge or odd bodies
    ("POST", "/v1/chat/completions", b"{not json"),
    ("POST", "/v1/chat/completions", b"[]"),
    ("POST", "/v1/chat/completions", json.dumps({"model": "qwen3-demo", "messages": []}).encode()),
    ("POST", "/v1/chat/completions", json.dumps({"model": "qwen3-demo", "messages": "hi"}).encode()),
    ("POST", "/v1/chat/completions", json.dumps({"model": "qwen3-demo", "messages": [{"role": "user"}] * 5000,
                                                 "max_tokens": 1}).encode()),
    ("POST", "/v1/embeddings", json.dumps({"model": "minilm", "input": [[]]}).encode()),
    ("POST", "/v1/audio/speech", json.dumps({"model": "voice-demo", "input": "\ud800"}).encode()),
    ("POST", "/v1/audio/transcriptions", b"--x\r\n\r\n--x--"),
    ("GET", "/v1/models/../../etc/passwd", b""),
    ("DELETE", "/v1/chat/completions", b""),
]


def start(port: int, log: Path) -> subprocess.Popen:
    from orchestrator.demo.__main__ import build_demo_models

    models = Path(os.environ.get("ORCH_DEMO_MODELS", ROOT / ".demo-models"))
    build_demo_models(models)
    env = {**os.environ, "ORCH_DEMO_MODELS": str(models), "HF_HUB_OFFLINE": "1"}
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "run", "configs/demo-tiny.yaml", "--port",
                                 str(port), "--api-key", KEY], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    for _ in range(600):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.5)
    raise SystemExit(f"the server did not start:\n{log.read_text()[-2000:]}")


def judge(status: int, body: bytes) -> tuple[bool, bool]:
    """(a 5xx, an error not in the OpenAI shape)."""
    if status < 400:
        return False, False
    try:
        error = json.loads(body).get("error")
    except (ValueError, AttributeError):
        error = None
    return status >= 500, not (isinstance(error, dict) and set(error) == SHAPE)


def schemathesis_run(url: str, args, workdir: Path) -> dict:
    binary = shutil.which("schemathesis") or str(Path(sys.executable).with_name("schemathesis"))
    if not Path(binary).exists():
        return {"skipped": "schemathesis is not installed (pip install schemathesis)"}
    har = workdir / "run.har"
    subprocess.run([binary, "run", f"{url}/openapi.json", "-H", f"Authorization: Bearer {KEY}",
                    "--max-examples", str(args.max_examples), "--max-time", str(args.max_time), "--checks", "all",
                    "--request-timeout", "60", "--report", "har", "--report-har-path", str(har),
                    "--exclude-path", "/v1/realtime", "--no-color"],
                   cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=args.max_time + 600)
    entries = json.loads(har.read_text())["log"]["entries"] if har.exists() else []
    tally = {"cases": len(entries), "5xx": 0, "not OpenAI shape": 0, "examples": []}
    for entry in entries:
        response = entry["response"]
        text = (response.get("content") or {}).get("text") or ""
        bad5, shape = judge(response["status"], text.encode())
        tally["5xx"] += bad5
        tally["not OpenAI shape"] += shape
        if (bad5 or shape) and len(tally["examples"]) < 5:
            tally["examples"].append(f"{entry['request']['method']} {entry['request']['url']} -> "
                                     f"{response['status']} {text[:120]}")
    return tally


def corpus_run(url: str) -> dict:
    tally = {"cases": 0, "5xx": 0, "not OpenAI shape": 0, "examples": []}
    renamed = {"tiny": "qwen3-demo"}
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    cases = [("POST", route, json.dumps({**body, "model": renamed.get(body.get("model"), body.get("model"))}).encode())
             for route, body, _, _ in BAD] + EXTRA
    with httpx.Client(base_url=url, timeout=120) as client:
        for method, route, content in cases:
            reply = client.request(method, route, content=content or None, headers=headers)
            bad5, shape = judge(reply.status_code, reply.content)
            tally["cases"] += 1
            tally["5xx"] += bad5
            tally["not OpenAI shape"] += shape
            if (bad5 or shape) and len(tally["examples"]) < 5:
                tally["examples"].append(f"{method} {route} -> {reply.status_code} {reply.text[:120]}")
    return tally


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--max-time", type=int, default=120, help="seconds for schemathesis (bounded)")
    parser.add_argument("--max-examples", type=int, default=50, help="schemathesis examples per operation")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/fuzz.json")
    args = parser.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "server.log"
        proc = start(port, log)
        try:
            results = {"schemathesis": schemathesis_run(url, args, Path(tmp)), "hand-made corpus": corpus_run(url)}
            alive = httpx.get(url + "/health", timeout=10).status_code == 200
        finally:
            proc.terminate()
            proc.wait(timeout=60)
        tracebacks = log.read_text().count("Traceback")
    table = Table(title="Fuzzing the demo-tiny stack's server (all must be 0)")
    for column in ("source", "cases", "5xx", "not OpenAI shape"):
        table.add_column(column, justify="left" if column == "source" else "right")
    for name, r in results.items():
        if "skipped" in r:
            table.add_row(name, r["skipped"], "", "")
            continue
        table.add_row(name, str(r["cases"]), str(r["5xx"]), str(r["not OpenAI shape"]))
    table.add_row("server log", "", f"tracebacks: {tracebacks}", f"still serving: {'yes' if alive else 'NO'}")
    console = Console(width=140)
    console.print(table)
    for name, r in results.items():
        for example in r.get("examples", []):
            console.print(f"[red]{name}[/red]: {example}", highlight=False)
    args.out.write_text(json.dumps({"hardware": describe(), "max_time_s": args.max_time,
                                    "max_examples": args.max_examples, "results": results,
                                    "tracebacks": tracebacks, "still_serving": alive}, indent=2))
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
