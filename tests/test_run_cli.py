"""`orchestrator run STACK` as a user starts it: a real process, the openai SDK on the other end."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import openai
from conftest import ROOT

from orchestrator.net import ProcessExited, free_port, wait_healthy


def stack_file(tmp_path, model_path, memory="1GiB", port=12345, total="4GiB", parser="hermes") -> str:
    path = tmp_path / "stack.yaml"
    path.write_text(f"""
gpu: {{device: cpu, memory: {total}, reserve: 0B}}
server: {{host: 127.0.0.1, port: {port}, api_key: "${{TEST_KEY:-}}"}}
models:
  - {{name: tiny, kind: llm, path: {model_path}, memory: {memory}, dtype: float32, max_model_len: 512, isolation: none,
     max_num_seqs: 4, seed: 0, enable_thinking: false, tool_call_parser: {parser}}}
  - {{name: vad, kind: vad}}
""")
    return str(path)


def test_run_in_process_answers_the_openai_sdk_and_exits_0_on_ctrl_c(tmp_path, tiny_models):
    port = free_port()
    env = {**os.environ, "TEST_KEY": "secret"}
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "run", stack_file(tmp_path, tiny_models["qwen3"],
                            port=port)], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        try:
            wait_healthy(f"http://127.0.0.1:{port}/health", proc, 60, poll_s=0.1)
        except ProcessExited:
            raise AssertionError(proc.stdout.read()) from None
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="secret", max_retries=0)
        assert [m.id for m in client.models.list().data] == ["tiny"]
        chunks = list(client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}],
                                                     max_tokens=5, stream=True))
        assert chunks[-1].choices[0].finish_reason == "length"
        with_key = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="wrong", max_retries=0)
        try:
            with_key.models.list()
            raise AssertionError("a wrong key was accepted")
        except openai.AuthenticationError:
            pass
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert "Plan beside actual" in out and "in server" in out


def test_run_refuses_a_stack_that_does_not_fit(tmp_path, tiny_models, run_cli):
    result = run_cli("run", stack_file(tmp_path, tiny_models["qwen3"], memory="1MiB"))
    assert result.returncode == 1 and "does not fit" in result.stderr and "Traceback" not in result.stderr
    assert "DOES NOT FIT" in result.stdout  # the plan's own report, as `orchestrator plan` prints it


def test_run_refuses_an_unknown_tool_parser(tmp_path, tiny_models, run_cli):
    result = run_cli("run", stack_file(tmp_path, tiny_models["qwen3"], parser="mistral"))
    assert result.returncode == 2 and "tool_call_parser" in result.stderr and "'hermes'" in result.stderr


def test_run_refuses_weights_it_does_not_have(tmp_path, run_cli):
    result = run_cli("run", stack_file(tmp_path, "Qwen/Qwen3-8B", memory="40GiB", total="64GiB"))
    assert result.returncode == 1 and "only its shipped config" in result.stderr and "Traceback" not in result.stderr
