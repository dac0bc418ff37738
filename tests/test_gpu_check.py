"""scripts/gpu-check.sh --cpu-smoke: every step of the GPU check runs its real code path with tiny shapes on the CPU,
so the script a lent GPU runs once cannot rot. About 90 s in all on an idle 2-core machine (the smoke run ~80 s),
up to ~170 s while other work shares the cores.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STEPS = ["kernels", "models", "planner", "stack", "decode", "voice"]
ENVIRONMENT = {"device", "device_type", "driver", "torch", "cuda", "triton", "python"}
HAS_GPU = subprocess.run(["sh", "-c", "nvidia-smi -L"], capture_output=True).returncode == 0


def gpu_check(*args: str, env: dict | None = None, timeout: float = 400) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "scripts/gpu-check.sh", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> tuple[subprocess.CompletedProcess, dict, Path]:
    """One smoke run of the whole check (the suite runs after set-up, so --no-setup)."""
    root = tmp_path_factory.mktemp("gpu-check")
    proc = gpu_check("--cpu-smoke", "--no-setup", "--out", str(root / "out"), "--work", str(root / "work"))
    record = json.loads((root / "out" / "gpu-smoke-cpu.json").read_text())
    return proc, record, root


def test_every_step_runs_and_writes_its_result(smoke):
    proc, record, root = smoke
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert record["cpu_smoke"] is True and ENVIRONMENT <= set(record["environment"])
    assert list(record["steps"]) == STEPS
    for name, step in record["steps"].items():
        assert step["status"] == "pass", (name, step["error"], step["failures"])
        assert ENVIRONMENT <= set(step["environment"]) and step["environment"]["device_type"] == "cpu"
        assert step["summary"] and step["seconds"] > 0 and Path(step["log"]).is_file()
    data = {name: step["data"] for name, step in record["steps"].items()}
    tests, graphs = data["kernels"]["tests"], data["kernels"]["graph_vs_eager"]
    assert tests["passed"] >= 3 and tests["failed"] == 0 and tests["triton_interpret"] is True
    assert graphs["equal"] is True and graphs["graphs_captured"] == [] and "why" in graphs
    assert data["planner"]["goal_judged"] is False
    kinds = {row["kind"] for row in data["planner"]["rows"]}
    assert {"llm", "asr", "tts", "embedding"} <= kinds
    for row in data["planner"]["rows"]:
        assert row["measured_by"].startswith("resident set") and row["measured_total"] > 0
        assert set(row["estimate"]) == set(row["measured"]) == set(row["error_pct"]) >= {"weights", "context"}
    stack = data["stack"]
    assert stack["errors"] == [] and all(stack["served"].values()) and stack["over_share_judged"] is False
    assert all(w["peak_bytes"] > 0 and w["share_bytes"] > 0 and w["restarts"] == 0 for w in stack["workers"])
    decode = data["decode"]
    assert decode["ours_tokens_per_s"] > 0 and decode["hf_continuous_tokens_per_s"] > 0
    assert {s["cuda_graphs"] for s in decode["single_stream"].values()} == {0} and "cuda_graphs_why" in decode
    rows = data["voice"]["voice_latency"]["rows"]
    assert [r["sessions"] for r in rows] == [1] and rows[0]["turns"] == 1 and rows[0]["client_p50_ms"] > 0


def test_the_table_lists_every_step(smoke):
    proc, record, root = smoke
    markdown = (root / "out" / "gpu-smoke-cpu.md").read_text()
    assert "| step | status | seconds | result |" in markdown and markdown in proc.stdout
    for step in record["steps"].values():
        assert f"| {step['title']} | pass |" in markdown
    assert "| **minilm** | **total** (RSS) |" in markdown  # the planner's per-part table follows


def test_a_failing_step_is_reported_and_the_next_still_runs(smoke):
    _, _, root = smoke  # its models are made: the models step after the failure only reuses them
    out = root / "failing"
    proc = gpu_check("--cpu-smoke", "--no-setup", "--out", str(out), "--work", str(root / "work"),
                     "--steps", "kernels,models", "--simulate-failure", "kernels")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    steps = json.loads((out / "gpu-smoke-cpu.json").read_text())["steps"]
    assert steps["kernels"]["status"] == "error" and "simulated failure" in steps["kernels"]["error"]
    assert steps["models"]["status"] == "pass"
    markdown = (out / "gpu-smoke-cpu.md").read_text()
    assert "| ERROR |" in markdown and "RuntimeError: simulated failure" in markdown
    assert f"| {steps['models']['title']} | pass |" in markdown


@pytest.mark.skipif(HAS_GPU, reason="this machine has a GPU, so there is nothing to refuse")
def test_refuses_without_a_gpu_unless_smoke(tmp_path):
    proc = gpu_check("--out", str(tmp_path), timeout=60)
    assert proc.returncode == 2 and "--cpu-smoke" in proc.stderr and not any(tmp_path.iterdir())
    direct = subprocess.run([sys.executable, "-m", "bench.gpu_check", "--out", str(tmp_path)], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert direct.returncode == 2 and "--cpu-smoke" in direct.stderr
