#!/usr/bin/env bash
# The main job: set up, then prove the 24 GB VTuber stack fits and show how the card is split.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Plan against the GPU NVML finds here; on a machine without one, against an RTX 4090.
if .venv/bin/python -c "from budget.probe import probe_gpus; raise SystemExit(bool(probe_gpus().error))"; then
    exec .venv/bin/orchestrator plan configs/vtuber-24gb.yaml --png vtuber-24gb.png "$@"
fi
exec .venv/bin/orchestrator plan configs/vtuber-24gb.yaml --gpu rtx-4090 --png vtuber-24gb.png "$@"
