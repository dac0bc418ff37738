#!/usr/bin/env bash
# The main job: set up, make the demo models once, then start the demo stack (every model kind, on the CPU)
# on http://127.0.0.1:12345/v1. Extra arguments go to `orchestrator run` (e.g. --port 8000). Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export ORCH_DEMO_MODELS="${ORCH_DEMO_MODELS:-$PWD/.demo-models}"
.venv/bin/python -m orchestrator.demo "$ORCH_DEMO_MODELS"
exec .venv/bin/orchestrator run configs/demo.yaml "$@"
