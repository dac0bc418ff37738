#!/usr/bin/env bash
# Every GPU-only check in one call, about 6.5 minutes on an H100/H200, the most valuable first: Triton kernels
# natively, CUDA graphs against eager, decode against the roofline, throughput beside transformers, planner estimate
# beside measured memory, the co-resident stack under load, voice latency if time is left. Each step is time-boxed in
# its own process group; results go to --out (default bench/results): gpu-<device>.json after every step, .md and
# .log (every step's log) beside it. Refuses without a GPU (exit 2) unless given --cpu-smoke (the same code paths,
# tiny shapes, on the CPU); exit 3 when the machine lacks what the check needs (said before any step runs).
#
# Python: $PYTHON if set, else .venv/bin/python where scripts/setup.sh made it, else the machine's python3 (an
# offline GPU host's image) with the wheels of .whl/ (scripts/gpu-wheels.sh, run where PyPI answers; GPU_CHECK_WHEELS
# names another folder) installed with `pip --no-index --no-deps --target` into a cache folder on PYTHONPATH. It never
# installs anything else and never reaches the network. Other arguments go to the driver (python -m bench.gpu_check).
set -euo pipefail
cd "$(dirname "$0")/.."
smoke=0
for arg in "$@"; do [[ $arg == --cpu-smoke ]] && smoke=1; done
if [[ $smoke == 0 ]] && ! nvidia-smi -L >/dev/null 2>&1; then
    echo "gpu-check: no NVIDIA GPU here (nvidia-smi finds none): this check measures what only a GPU can show." >&2
    echo "Run it on a machine with one, or pass --cpu-smoke for the same code paths with tiny shapes on the CPU." >&2
    exit 2
fi
if [[ -n "${PYTHON:-}" ]]; then py="$PYTHON"
elif [[ -x .venv/bin/python ]]; then py=.venv/bin/python
else py=python3
fi
wheels="${GPU_CHECK_WHEELS:-.whl}"
site=""
if [[ $py != .venv/bin/python ]] && compgen -G "$wheels/*.whl" >/dev/null; then
    # the carried wheels, installed once per set and interpreter (a rerun in the same window reuses them)
    key="$( (ls "$wheels"/*.whl; "$py" -c 'import sys; print(sys.version)') | sha256sum | cut -c1-12)"
    site="${TMPDIR:-/tmp}/gpu-check-site-$key"
    if [[ ! -f "$site/.installed" ]]; then
        rm -rf "$site"
        echo "gpu-check: installing $(ls "$wheels"/*.whl | wc -l) carried wheels from $wheels into $site" >&2
        "$py" -m pip install -q --disable-pip-version-check --no-index --no-deps --no-compile --no-cache-dir \
            --target "$site" "$wheels"/*.whl
        touch "$site/.installed"
    fi
fi
export PYTHONPATH="${site:+$site:}$PWD${PYTHONPATH:+:$PYTHONPATH}"
export GPU_CHECK_SITE="$site"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
export ORCH_REAL_MODELS="${ORCH_REAL_MODELS:-$PWD/.demo-models/real}"   # the Piper voice, if the demo fetched it
exec "$py" -m bench.gpu_check "$@"
