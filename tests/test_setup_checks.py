"""A test whose set-up piece is missing skips on a person's machine and fails under CI, saying what is missing."""
from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import ROOT

SPEAKS = f"""
import sys
sys.path.insert(0, {str(ROOT / "tests")!r})
from speech import speak

def test_speaks():
    assert len(speak("hello")) > 0
"""


def run_without_espeak(tmp_path, ci: str | None) -> subprocess.CompletedProcess:
    (tmp_path / "test_speaks.py").write_text(SPEAKS)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PATH"] = str(tmp_path / "empty")  # no espeak-ng on it (the interpreter is called by its full path)
    if ci is not None:
        env["CI"] = ci
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rsf", "-p", "no:cacheprovider", str(tmp_path)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def test_missing_espeak_fails_under_ci(tmp_path):
    result = run_without_espeak(tmp_path, "true")
    assert result.returncode == 1, result.stdout
    assert "1 failed" in result.stdout and "espeak-ng is not installed" in result.stdout, result.stdout
    assert "CI is set" in result.stdout, result.stdout


def test_missing_espeak_skips_on_a_person_s_machine(tmp_path):
    for ci in (None, "false"):
        result = run_without_espeak(tmp_path, ci)
        assert result.returncode == 0 and "1 skipped" in result.stdout, result.stdout
        assert "espeak-ng is not installed" in result.stdout, result.stdout
