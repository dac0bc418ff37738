"""Step 1: the kernel tests and the CUDA-only tests natively.

On a GPU: all of tests/test_kernels.py (paged attention in bf16/fp16/fp32, the fp8 KV store), the Triton int4
and the fp8 matmul and the packed-quant tests of tests/test_quantized.py, and the engine's memory-flatness test
(tests/test_llm_memory.py, torch's allocated bytes over 1,000 decode steps). On the smoke run: a few kernel tests
under TRITON_INTERPRET=1 (where the interpreter works with this numpy), and the GPU selection collected (not run), so
a test module that imports something this machine lacks fails here first.
"""
from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET

from bench.gpu_check import ROOT
from bench.gpu_check.common import Context, Outcome

# test functions of tests/test_quantized.py that need a GPU to mean anything and no downloaded model
QUANTIZED = ("test_the_triton_int4_kernel_equals_its_reference_twin",
             "test_fp8_matmul_on_a_capable_card_equals_its_reference_twin",
             "test_packed_matmul_on_random_k_quant_blocks", "test_packed_matmul_on_tensors_quantized_by_gguf")
SMOKE_TESTS = ["tests/test_kernels.py", "-k", "fp8_pool or store_kv or (triton_attention_equals_reference and case0)"]


def gpu_tests() -> list[str]:
    """The GPU selection: whole files, and the quantized tests that exist now (the kernels are still growing)."""
    source = (ROOT / "tests/test_quantized.py").read_text()
    return (["tests/test_kernels.py"] + [f"tests/test_quantized.py::{name}" for name in QUANTIZED
                                         if f"def {name}(" in source] + ["tests/test_llm_memory.py"])


def interpreter_broken() -> str | None:
    """Why Triton's CPU interpreter cannot run our kernels here, if it cannot: it takes int() of one-element arrays
    (a loop bound), which numpy 2.5 refuses (the GPU host's image: numpy 2.5, Triton 3.6). Natively nothing is
    interpreted."""
    import numpy as np
    import triton

    try:
        int(np.ones(1))
    except TypeError:
        return (f"Triton {triton.__version__}'s interpreter takes int() of a one-element array, which numpy "
                f"{np.__version__} refuses: the kernel tests run natively on a GPU and interpreted in .venv's suite")
    return None


def run(ctx: Context) -> Outcome:
    data, failures = {}, []
    broken = interpreter_broken() if ctx.smoke else None
    if broken:
        data["interpreter_why"] = broken
    else:
        tests = data["tests"] = pytest_run(ctx, SMOKE_TESTS if ctx.smoke else gpu_tests())
        failures += [f"{n} test(s) failed: {', '.join(tests['failed_tests'])}" for n in [tests["failed"]] if n]
        if tests["errors"]:
            failures.append(f"{tests['errors']} test error(s): {', '.join(tests['failed_tests'])}")
        if not tests["passed"]:
            failures.append("no test passed (none collected?)")
        if ctx.cuda and tests["skipped"]:
            failures.append(f"{tests['skipped']} test(s) skipped on a GPU, where every one should run")
    if ctx.smoke:  # what the GPU would run must at least import here
        collect = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--collect-only",
                                  *gpu_tests()], cwd=ROOT, capture_output=True, text=True)
        print(collect.stdout[-3000:], collect.stderr[-2000:], sep="\n")
        data["gpu_selection_collected"] = collect.returncode == 0
        if collect.returncode != 0:
            failures.append(f"the GPU's test selection does not collect here: {collect.stdout.strip()[-600:]}")
    tests = data.get("tests")
    summary = (f"{tests['passed']} passed, {tests['failed']} failed, {tests['skipped']} skipped" if tests else
               f"interpreted kernel tests not run ({broken})")
    if ctx.smoke:
        summary += f"; the GPU's selection {'collects' if data['gpu_selection_collected'] else 'DOES NOT collect'}"
    return Outcome(data, summary, failures)


def pytest_run(ctx: Context, selection: list[str]) -> dict:
    """pytest in a child with a JUnit report, so the counts and the failing tests' names come back exactly."""
    report = ctx.work / "kernels-junit.xml"
    report.unlink(missing_ok=True)
    sys.stdout.flush()   # pytest writes into this step's log as it goes: a time box that ends it leaves its progress
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rfE", "-p", "no:cacheprovider",
                           f"--junitxml={report}", *selection], cwd=ROOT)
    if not report.is_file():
        raise RuntimeError(f"pytest wrote no report (exit {proc.returncode}); see the log's tail")
    suite = ET.parse(report).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    failed = [case.get("name") for case in suite.iter("testcase")
              if case.find("failure") is not None or case.find("error") is not None]
    total, skipped = int(suite.get("tests")), int(suite.get("skipped"))
    errors, failures = int(suite.get("errors")), int(suite.get("failures"))
    return {"selection": selection, "triton_interpret": ctx.smoke, "exit_code": proc.returncode,
            "passed": total - skipped - errors - failures, "failed": failures, "errors": errors, "skipped": skipped,
            "failed_tests": failed, "seconds": float(suite.get("time"))}
