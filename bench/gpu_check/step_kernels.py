"""Step 1: the kernel tests and the CUDA-only tests natively, and CUDA-graph decode token for token against eager.

On a GPU: all of tests/test_kernels.py (bf16 and the fp8 store included) and the engine's memory-flatness test
(tests/test_llm_memory.py, torch's allocated bytes over 1,000 decode steps). On the smoke run: a few kernel tests
under TRITON_INTERPRET=1. Then two engines on one tiny random-weight Qwen3, one with CUDA graphs and one eager,
decode the same greedy batches; on the CPU no graph is captured, so both are eager and the JSON says so.
"""
from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET

from bench.gpu_check import ROOT
from bench.gpu_check.common import Context, Outcome

GPU_TESTS = ["tests/test_kernels.py", "tests/test_llm_memory.py"]
SMOKE_TESTS = ["tests/test_kernels.py", "-k", "fp8_pool or store_kv or (triton_attention_equals_reference and case0)"]
BATCHES = (1, 3, 8)      # 3 runs in the graph captured for 4 (padded rows), 8 in its own
TOKENS = 48


def run(ctx: Context) -> Outcome:
    tests = pytest_run(ctx)
    graphs = graph_vs_eager(ctx)
    failures = [f"{n} test(s) failed: {', '.join(tests['failed_tests'])}" for n in [tests["failed"]] if n]
    if tests["errors"]:
        failures.append(f"{tests['errors']} test error(s)")
    if not tests["passed"]:
        failures.append("no test passed (none collected?)")
    if ctx.cuda and tests["skipped"]:
        failures.append(f"{tests['skipped']} test(s) skipped on a GPU, where every one should run")
    if graphs["equal"] is False:
        failures.append(f"CUDA-graph decode differs from eager: {graphs['first_difference']}")
    if ctx.cuda and not graphs["graphs_captured"]:
        failures.append("no CUDA graph was captured on CUDA")
    compared = "CUDA graphs = eager" if ctx.cuda else "eager = eager (no graphs on CPU)"
    summary = (f"{tests['passed']} passed, {tests['failed']} failed, {tests['skipped']} skipped; "
               f"{compared}: {'same tokens' if graphs['equal'] else 'DIFFERENT tokens'} at batch "
               f"{', '.join(map(str, BATCHES))}")
    return Outcome({"tests": tests, "graph_vs_eager": graphs}, summary, failures)


def pytest_run(ctx: Context) -> dict:
    """pytest in a child with a JUnit report, so the counts and the failing tests' names come back exactly."""
    report = ctx.work / "kernels-junit.xml"
    selection = SMOKE_TESTS if ctx.smoke else GPU_TESTS
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={report}",
                           *selection], cwd=ROOT, capture_output=True, text=True)
    print(proc.stdout[-4000:], proc.stderr[-2000:], sep="\n")
    suite = ET.parse(report).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    failed = [case.get("name") for case in suite.iter("testcase")
              if case.find("failure") is not None or case.find("error") is not None]
    total, skipped = int(suite.get("tests")), int(suite.get("skipped"))
    errors, failures = int(suite.get("errors")), int(suite.get("failures"))
    return {"selection": selection, "triton_interpret": ctx.smoke, "exit_code": proc.returncode,
            "passed": total - skipped - errors - failures, "failed": failures, "errors": errors, "skipped": skipped,
            "failed_tests": failed, "seconds": float(suite.get("time"))}


def graph_vs_eager(ctx: Context) -> dict:
    """Greedy decode of the same prompts by a graph-capturing engine and an eager one; the first token that differs."""
    from engines.llm import EngineConfig, LLMEngine, SamplingParams
    from orchestrator.demo.tiny_llm import make_model

    folder = ctx.work / "kernels-qwen3"
    if not (folder / "config.json").is_file():
        make_model(folder, "qwen3")
    engines = {eager: LLMEngine(EngineConfig(str(folder), dtype="float32", max_model_len=512, max_num_seqs=8,
                                             num_kv_blocks=128, enforce_eager=eager, device=ctx.device))
               for eager in (False, True)}
    captured = sorted(engines[False].runner.graphs)
    greedy = SamplingParams(temperature=0, max_tokens=TOKENS, ignore_eos=True)
    first_difference = None
    for n in BATCHES:
        prompts = [f"Hello there {i}, how are you today?" for i in range(n)]
        got = {eager: [o.token_ids for o in engine.generate(prompts, greedy)] for eager, engine in engines.items()}
        for i, (a, b) in enumerate(zip(got[False], got[True])):
            at = next((t for t, (x, y) in enumerate(zip(a, b)) if x != y), None)
            if at is not None and first_difference is None:
                first_difference = f"batch {n}, request {i}, token {at}: {a[at]} (graphs) vs {b[at]} (eager)"
    for engine in engines.values():
        engine.close()
    return {"graphs_captured": captured, "batches": list(BATCHES), "tokens_per_request": TOKENS,
            "compared": "cuda graphs vs eager" if captured else "eager vs eager",
            **({} if captured else {"why": "CUDA graphs are captured only on CUDA; both engines ran eager here"}),
            "equal": first_difference is None, "first_difference": first_difference}
