#!/usr/bin/env bash
# The whole test suite, offline: set up, then pytest (extra arguments go to pytest).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TRITON_INTERPRET=1
exec .venv/bin/python -m pytest "$@"
