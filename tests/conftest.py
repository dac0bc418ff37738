"""Shared fixtures: the repo's paths, and a runner for the CLI as a user starts it."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests import their helpers (live_server, speech) by name
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
if not Path("/dev/nvidia0").exists():  # no GPU: Triton kernels run in the interpreter (set before any @triton.jit)
    os.environ.setdefault("TRITON_INTERPRET", "1")

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
DEMO_GGUFS = {"smollm2": "SmolLM2-135M-Instruct.Q4_1.gguf",
              "qwen2.5-coder-0.5b": "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"}


@pytest.fixture
def run_cli():
    """Run `orchestrator ...` in a fresh process, as a user would; returns the CompletedProcess."""

    def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], capture_output=True, text=True,
                              cwd=ROOT, env={**os.environ, "COLUMNS": "120", **(env or {})}, timeout=120)

    return run


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict:
    """Random-weight Qwen3, Qwen2 (sharded) and Llama (llama3 rope, tied embeddings) folders, made once."""
    from orchestrator.demo.tiny_llm import make_model

    root = tmp_path_factory.mktemp("llm")
    return {kind: make_model(root / kind, kind) for kind in ("qwen3", "qwen2", "llama")}


@pytest.fixture(scope="session")
def demo_models(tmp_path_factory) -> Path:
    """The demo stack's models (random-weight Qwen3, Whisper and VITS; the real MiniLM), made once."""
    from orchestrator.demo.__main__ import build_demo_models

    return build_demo_models(tmp_path_factory.mktemp("demo") / "models")


@pytest.fixture(scope="session")
def real_models() -> Path:
    """The real models (GGUF SmolLM2 and Qwen2.5-Coder-0.5B, Whisper base, Piper joe, Kokoro-82M with its Japanese
    voices, MiniLM), checked once.

    scripts/test.sh fetches them before pytest starts; here they are only re-checked (and fetched if missing)."""
    from orchestrator.demo.real_models import GROUPS, assemble

    root = Path(os.environ.get("ORCH_REAL_MODELS", ROOT / ".demo-models" / "real"))
    os.environ["ORCH_REAL_MODELS"] = str(root)
    return assemble(root, GROUPS["suite"])


@pytest.fixture(scope="session")
def packed_ggufs(real_models) -> dict:
    """Both demo GGUFs served as stored (packed), loaded once for every module that reads them (a load takes 15-40 s
    here); a module that wraps one in AsyncLLM shuts that down, leaving no request behind, before it ends."""
    from engines.llm import EngineConfig, LLMEngine

    engines = {name: LLMEngine(EngineConfig(str(real_models / name / file), dtype="float32", num_kv_blocks=512,
                                            max_model_len=4096, max_num_seqs=16, max_num_batched_tokens=512))
               for name, file in DEMO_GGUFS.items()}
    yield engines
    for engine in engines.values():
        assert not engine.has_unfinished_requests(), "a module left requests in a shared engine"
