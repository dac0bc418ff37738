"""A model saved by transformers 5 with linear rope scaling x4 over 128 positions is planned and served at 512."""
from __future__ import annotations

import json

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from budget.estimate import PlanInputError
from budget.estimators.llm import estimate_llm
from engines.llm import EngineConfig, LLMEngine, SamplingParams
from orchestrator.stack import LLMSpec


@pytest.fixture(scope="module")
def linear_x4(tmp_path_factory):
    """Written by transformers 5 itself: its config says `rope_parameters`, with no `rope_scaling` key."""
    path = tmp_path_factory.mktemp("rope")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                         rope_parameters={"rope_type": "linear", "factor": 4.0, "rope_theta": 10000.0})
    LlamaForCausalLM(config).save_pretrained(path)
    saved = json.loads((path / "config.json").read_text())
    assert saved["rope_parameters"]["rope_type"] == "linear" and not saved.get("rope_scaling")
    return path


def test_planner_allows_the_scaled_length(linear_x4):
    """Failed before the fix: "set max_model_len to 128 or less" (only `rope_scaling` was read)."""
    spec = LLMSpec(name="m", kind="llm", path=str(linear_x4), max_model_len=512)
    assert estimate_llm(spec, on_gpu=True).max_model_len == 512
    with pytest.raises(PlanInputError, match="linear rope scaling .* set max_model_len to 512 or less"):
        estimate_llm(LLMSpec(name="m", kind="llm", path=str(linear_x4), max_model_len=513), True)


def test_engine_serves_positions_past_the_config_table(linear_x4):
    """Failed before the fix: the engine refused 512; with the refusal gone, the rotary table had 128 rows, so a
    position past it was an out-of-range gather (a device-side assert on a GPU). Greedy tokens equal transformers'."""
    llm = LLMEngine(EngineConfig(str(linear_x4), dtype="float32", num_kv_blocks=40, max_model_len=512,
                                 skip_tokenizer_init=True))
    prompt = [(7 * i) % 96 for i in range(300)]
    out = llm.generate([prompt], SamplingParams(temperature=0, max_tokens=8, ignore_eos=True))[0]
    hf = LlamaForCausalLM.from_pretrained(linear_x4, dtype=torch.float32).eval()
    want = hf.generate(torch.tensor([prompt]), max_new_tokens=8, do_sample=False, eos_token_id=None, pad_token_id=0)
    assert out.token_ids == want[0, 300:].tolist()
