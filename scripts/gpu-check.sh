#!/usr/bin/env bash
# Every GPU-only check in one call, under ten minutes on an H100/H200: kernels and CUDA-only tests natively, planner
# estimate beside measured memory, the 24 GB stack capped under load, decode vs roofline (graphs / eager) and vs HF
# continuous batching, voice latency. Each step is time-boxed; results go to bench/results/gpu-<device>.json (+ .md).
# Refuses without a GPU (exit 2) unless given --cpu-smoke (the same code paths, tiny shapes, on the CPU; the suite
# runs it). --no-setup skips scripts/setup.sh (an environment already made, e.g. a machine with no network); other
# arguments go to the driver (python -m bench.gpu_check --help). Safe to run twice: models made once are kept.
set -euo pipefail
cd "$(dirname "$0")/.."
smoke=0 setup=1 args=()
for arg in "$@"; do
    case "$arg" in
        --cpu-smoke) smoke=1; args+=("$arg") ;;
        --no-setup) setup=0 ;;
        *) args+=("$arg") ;;
    esac
done
if [[ $smoke == 0 ]] && ! nvidia-smi -L >/dev/null 2>&1; then
    echo "gpu-check: no NVIDIA GPU here (nvidia-smi finds none): this check measures what only a GPU can show." >&2
    echo "Run it on a machine with one, or pass --cpu-smoke for the same code paths with tiny shapes on the CPU." >&2
    exit 2
fi
if [[ $setup == 1 ]]; then bash scripts/setup.sh; fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export ORCH_REAL_MODELS="${ORCH_REAL_MODELS:-$PWD/.demo-models/real}"   # the Piper voice, if the demo fetched it
exec .venv/bin/python -m bench.gpu_check "${args[@]}"
