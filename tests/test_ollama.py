"""`path: ollama:NAME[:TAG]` serves a model already pulled with Ollama, from a store laid out as Ollama lays it out."""
from __future__ import annotations

import hashlib
import json
import os

import pytest

from budget.estimate import PlanInputError
from budget.planner import plan_stack
from orchestrator.stack import Stack
from tests.conftest import DEMO_GGUFS



@pytest.fixture
def store(tmp_path, real_models, monkeypatch):
    """An Ollama store holding SmolLM2 as `smollm2:135m` (its blob a link to the demo's GGUF) and one more model."""
    gguf = real_models / "smollm2" / DEMO_GGUFS["smollm2"]
    digest = hashlib.sha256(gguf.read_bytes()).hexdigest()
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    os.symlink(gguf, blobs / f"sha256-{digest}")
    template = blobs / "sha256-0123"
    template.write_text("{{ .Prompt }}")
    for name, tag in (("library/smollm2", "135m"), ("someone/tiny", "latest")):
        folder = tmp_path / "manifests" / "registry.ollama.ai" / name
        folder.mkdir(parents=True)
        (folder / tag).write_text(json.dumps({"schemaVersion": 2, "layers": [
            {"mediaType": "application/vnd.ollama.image.model", "digest": f"sha256:{digest}",
             "size": gguf.stat().st_size},
            {"mediaType": "application/vnd.ollama.image.template", "digest": "sha256:0123", "size": 13}]}))
    monkeypatch.setenv("OLLAMA_MODELS", str(tmp_path))
    return gguf


def stack(path: str) -> Stack:
    return Stack.model_validate({"gpu": {"device": "cpu", "memory": "4GiB"}, "models": [
        {"name": "smol", "kind": "llm", "path": path, "dtype": "float32", "memory": "rest", "max_model_len": 2048}]})


def test_an_ollama_name_plans_and_serves_the_same_model_as_its_file(store, packed_ggufs):
    from engines.llm import EngineConfig, LLMEngine, SamplingParams

    by_name, by_file = (plan_stack(stack(p), 4 << 30, "test").models[0].estimate
                        for p in ("ollama:smollm2:135m", str(store)))
    assert by_name.weights_bytes == by_file.weights_bytes and by_name.storage == by_file.storage == \
        "Q4_1 kept packed (the file's blocks)"
    spec = stack("ollama:smollm2:135m").models[0]
    config = EngineConfig.from_spec(spec, 256 << 20)
    assert "sha256-" in config.model  # the blob, named by its digest
    prompt = list(range(20, 40))
    greedy = SamplingParams(temperature=0, max_tokens=6)
    ours = LLMEngine(config).generate([prompt], greedy)[0].token_ids
    direct = packed_ggufs["smollm2"].generate([prompt], greedy)[0].token_ids  # the same file, loaded by its path
    assert ours == direct and len(ours) == 6


def test_a_missing_ollama_name_lists_what_is_pulled(store):
    with pytest.raises(PlanInputError) as error:
        plan_stack(stack("ollama:qwen3:8b"), 4 << 30, "test")
    message = str(error.value)
    assert "'qwen3:8b' is not in" in message and "smollm2:135m" in message and "someone/tiny:latest" in message
    assert "ollama pull qwen3:8b" in message
