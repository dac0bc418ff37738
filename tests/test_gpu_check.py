"""scripts/gpu-check.sh --cpu-smoke: every step of the GPU check runs its real code path with tiny shapes on the CPU,
so the script a lent GPU runs once cannot rot.

The main run is the rehearsal of the offline GPU host (bench/gpu_check/rehearsal.py): Python 3.12 with that host's
image (torch 2.11, triton 3.6, transformers 5.17, ...) and nothing it lacks, plus only the carried cp312 wheels,
installed as the host installs them. An import the host lacks fails here first. The environment is built once per set
of pins (the first build downloads ~3 GB, a few minutes); if it cannot be built the tests fail, never skip. A second,
short run in the project's own .venv covers what the host cannot run (Whisper, the voice pipeline). About 3 minutes
in all on a 2-core machine once the environment is cached.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
STEPS = ["kernels", "graphs", "models", "decode", "throughput", "planner", "stack", "voice"]
ENVIRONMENT = {"device", "device_type", "driver", "torch", "cuda", "triton", "python", "onnxruntime",
               "carried_wheels"}
HAS_GPU = subprocess.run(["sh", "-c", "nvidia-smi -L"], capture_output=True).returncode == 0


def gpu_check(*args: str, env: dict | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "scripts/gpu-check.sh", *args], cwd=ROOT, capture_output=True, text=True,
                          env=env or dict(os.environ), timeout=timeout)


@pytest.fixture(scope="module")
def host() -> dict:
    """gpu-check.sh's environment in the rehearsal of the GPU host; building it may take minutes the first time."""
    from bench.gpu_check.rehearsal import build, environ

    return environ(*build())


@pytest.fixture(scope="module")
def smoke(host, tmp_path_factory) -> tuple[subprocess.CompletedProcess, dict, Path]:
    """One smoke run of the whole check, as the GPU host would run it."""
    root = tmp_path_factory.mktemp("gpu-check")
    proc = gpu_check("--cpu-smoke", "--out", str(root / "out"), "--work", str(root / "work"), env=host)
    assert (root / "out" / "gpu-smoke-cpu.json").is_file(), proc.stdout[-3000:] + proc.stderr[-3000:]
    record = json.loads((root / "out" / "gpu-smoke-cpu.json").read_text())
    return proc, record, root


def test_the_rehearsal_holds_the_hosts_image_and_nothing_it_lacks(host):
    from bench.gpu_check.wheels import HERE, canonical, read_list

    ready = json.loads((Path(host["PYTHON"]).parents[2] / "ready.json").read_text())
    installed = {canonical(d["name"]): d["version"] for d in ready["installed"]}
    assert set(installed) <= set(read_list(HERE / "host_image.txt"))
    assert installed["torch"] == "2.11.0" and installed["triton"] == "3.6.0"
    assert installed["transformers"] == "5.17.0" and "fastapi" not in installed and "pydantic" not in installed
    wheels = sorted(Path(host["GPU_CHECK_WHEELS"]).glob("*.whl"))
    assert {canonical(w.name.split("-")[0]) for w in wheels} == set(read_list(HERE / "wheels.txt"))
    assert sum(w.stat().st_size for w in wheels) < 40 * 2**20


def test_the_wheel_check_names_a_requirement_neither_the_image_nor_the_set_has(tmp_path):
    import zipfile

    from bench.gpu_check.wheels import check

    wheel = tmp_path / "fastapi-0.165.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("fastapi-0.165.0.dist-info/METADATA", "Name: fastapi\nRequires-Dist: starlette>=1.6\n"
                   "Requires-Dist: numpy\nRequires-Dist: brand-new-thing>=1\nRequires-Dist: ray; extra == 'all'\n"
                   "Requires-Dist: pywin32; sys_platform == 'win32'\n")
    problems = check([wheel], "3.12")
    # numpy: the image has it; ray: only an extra's; pywin32: only on Windows
    assert any("requires brand-new-thing" in p for p in problems)
    assert not any("numpy" in p or "ray" in p or "pywin32" in p for p in problems)
    assert any(p.startswith("pydantic: no wheel downloaded") for p in problems)


def test_every_step_runs_on_the_hosts_packages_and_writes_its_result(smoke):
    proc, record, root = smoke
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    env = record["environment"]
    assert record["cpu_smoke"] is True and ENVIRONMENT <= set(env) and env["device_type"] == "cpu"
    assert env["python"].startswith("3.12.") and env["torch"].startswith("2.11.") and env["triton"] == "3.6.0"
    assert any(w.startswith("fastapi-") for w in env["carried_wheels"]) and env["onnxruntime"]["providers"]
    assert record["preflight"] == [] and list(record["steps"]) == STEPS
    for name, step in record["steps"].items():
        expected = "skipped" if name == "voice" else "pass"
        assert step["status"] == expected, (name, step["error"], step["failures"], step["log_tail"])
        assert step["log_tail"] and Path(step["log"]).is_file() and step["traceback"] is None
    assert "ctranslate2" in record["steps"]["voice"]["error"]
    data = {name: step["data"] for name, step in record["steps"].items()}
    # numpy 2.5 (the host's) breaks Triton 3.6's interpreter, not the kernels: .venv's suite interprets them
    assert "numpy 2.5" in data["kernels"]["interpreter_why"] and data["kernels"]["gpu_selection_collected"] is True
    graphs = data["graphs"]
    assert graphs["graphs_captured"] == [] and "why" in graphs and all(r["problem"] is None for r in graphs["rows"])
    assert "asr" in data["models"]["left_out"] and "vad" in data["models"]["left_out"]
    assert data["planner"]["goal_judged"] is False
    assert {row["kind"] for row in data["planner"]["rows"]} == {"llm", "tts", "embedding"}
    for row in data["planner"]["rows"]:
        assert row["measured_by"].startswith("resident set") and row["measured_total"] > 0
        assert set(row["estimate"]) == set(row["measured"]) == set(row["error_pct"]) >= {"weights", "context"}
    stack = data["stack"]
    assert stack["errors"] == [] and stack["over_share_judged"] is False and "asr" in stack["left_out"]
    assert stack["served"]["chat"] and stack["served"]["tts"] and stack["served"]["embeddings"]
    assert all(w["peak_bytes"] > 0 and w["share_bytes"] > 0 and w["restarts"] == 0 for w in stack["workers"])
    decode = data["decode"]
    assert len(decode["rows"]) == 6 and all(r["decode_tokens_per_s"] > 0 and r["cuda_graphs"] == 0
                                            for r in decode["rows"])
    assert {r["quantization"] for r in decode["rows"]} == {"none", "int4"} and "cuda_graphs_why" in decode
    assert data["throughput"]["ours_tokens_per_s"] > 0 and data["throughput"]["hf_continuous_tokens_per_s"] > 0


def test_out_holds_three_files_that_come_back_from_a_lent_machine(smoke):
    proc, record, root = smoke
    assert sorted(p.name for p in (root / "out").iterdir()) == ["gpu-smoke-cpu.json", "gpu-smoke-cpu.log",
                                                                 "gpu-smoke-cpu.md"]
    markdown = (root / "out" / "gpu-smoke-cpu.md").read_text()
    assert "| step | status | seconds | result |" in markdown and markdown in proc.stdout
    for step in record["steps"].values():
        assert f"| {step['title']} | {'SKIPPED' if step['step'] == 'voice' else 'pass'} |" in markdown
    assert "| **minilm** | **total** (RSS) |" in markdown  # the planner's per-part table follows
    log = (root / "out" / "gpu-smoke-cpu.log").read_text()
    assert all(f"===== {name}: {name}.log" in log for name in STEPS) and "===== stack: stack-server.log" in log


def test_a_failing_step_is_reported_and_the_voice_pipeline_runs_in_the_project_env(smoke):
    """In .venv (Whisper, PyAV, Silero there): a failure is reported and the next steps still run, the voice too."""
    _, _, root = smoke
    out = root / "failing"
    proc = gpu_check("--cpu-smoke", "--out", str(out), "--work", str(root / "work-venv"),
                     "--steps", "kernels,models,voice", "--simulate-failure", "kernels")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    steps = json.loads((out / "gpu-smoke-cpu.json").read_text())["steps"]
    assert steps["kernels"]["status"] == "error" and "simulated failure" in steps["kernels"]["error"]
    assert "RuntimeError: simulated failure" in steps["kernels"]["traceback"]
    assert steps["models"]["status"] == "pass" and steps["models"]["data"]["left_out"].keys() <= {"piper"}
    assert steps["voice"]["status"] == "pass", (steps["voice"]["error"], steps["voice"]["log_tail"])
    rows = steps["voice"]["data"]["voice_latency"]["rows"]
    assert [r["sessions"] for r in rows] == [1] and rows[0]["turns"] == 1 and rows[0]["client_p50_ms"] > 0
    markdown = (out / "gpu-smoke-cpu.md").read_text()
    assert "| ERROR |" in markdown and "RuntimeError: simulated failure" in markdown


@pytest.mark.skipif(HAS_GPU, reason="this machine has a GPU, so there is nothing to refuse")
def test_refuses_without_a_gpu_unless_smoke(tmp_path):
    proc = gpu_check("--out", str(tmp_path), timeout=60)
    assert proc.returncode == 2 and "--cpu-smoke" in proc.stderr and not any(tmp_path.iterdir())
    direct = subprocess.run([sys.executable, "-m", "bench.gpu_check", "--out", str(tmp_path)], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert direct.returncode == 2 and "--cpu-smoke" in direct.stderr
