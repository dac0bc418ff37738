"""The split of a card: shares, KV blocks, concurrency, and refusals that name the fix."""
import math

import pytest

from budget.estimate import PlanInputError
from budget.gpus import PRESETS
from budget.planner import plan_stack
from budget.units import GiB, MiB
from orchestrator.stack_file import load_stack, parse_stack
from tests.conftest import CONFIGS

RTX_4090 = PRESETS["rtx-4090"].total_bytes


def _plan(text: str, total: int = 24 * GiB):
    return plan_stack(parse_stack(text), total, "test card")


def test_24gb_stack_on_a_4090():
    plan = plan_stack(load_stack(CONFIGS / "vtuber-24gb.yaml"), RTX_4090, "4090")
    assert plan.fits, plan.problems
    llm = plan.models[0]
    assert llm.estimate.name == "qwen3-8b" and llm.estimate.weights_bytes == 16_381_470_720
    assert plan.max_concurrent_sequences >= 1
    assert plan.kv_tokens == plan.kv_blocks * 16
    assert llm.kv_bytes == plan.kv_blocks * 16 * llm.estimate.kv_bytes_per_token
    on_card = [m for m in plan.models if m.on_card]
    assert sum(m.share_bytes for m in on_card) == RTX_4090 - plan.reserve_bytes  # rest takes the remainder exactly
    assert plan.headroom_bytes == RTX_4090 - plan.used_bytes > 0
    vad = next(m for m in plan.models if m.estimate.kind == "vad")
    assert not vad.on_card and vad.share_bytes == 0


def test_24gb_stack_refused_on_16gb_with_the_fix():
    plan = plan_stack(load_stack(CONFIGS / "vtuber-24gb.yaml"), PRESETS["rtx-4080"].total_bytes, "4080")
    assert not plan.fits
    assert any("qwen3-8b needs" in p and "smaller or quantized model" in p for p in plan.problems)
    (refusal,) = [p for p in plan.problems if "qwen3-8b needs" in p]
    assert "int4: 4.77 GiB of weights, fits with" in refusal and "int8: 7.63 GiB of weights" in refusal, refusal


def test_the_16_gb_stack_holds_qwen3_8b_as_int4_at_40000_tokens():
    plan = plan_stack(load_stack(CONFIGS / "vtuber-16gb.yaml"), PRESETS["rtx-4080"].total_bytes, "4080")
    llm = plan.models[0]
    assert plan.fits and llm.estimate.name == "qwen3-8b" and llm.estimate.storage == "int4-g32"
    assert plan.max_model_len == 40_000 and plan.max_concurrent_sequences >= 1
    # 8.19e9 parameters at 4 bits plus a bfloat16 scale and zero per 32 (5 bits): 4.77 GiB; Ollama's qwen3:8b
    # (Q4_K_M) file is 5.2 GB (4.84 GiB)
    assert 4.7 * GiB < llm.estimate.weights_bytes < 4.84 * GiB


@pytest.mark.parametrize("stack, gpu", [("vtuber-16gb.yaml", "rtx-4080"), ("vtuber-12gb.yaml", "rtx-3060"),
                                        ("vtuber-12gb.yaml", "rtx-4070"), ("vtuber-80gb.yaml", "h100-80")])
def test_other_shipped_stacks_fit_their_cards(stack, gpu):
    plan = plan_stack(load_stack(CONFIGS / stack), PRESETS[gpu].total_bytes, gpu)
    assert plan.fits, plan.problems


def test_kv_arithmetic_and_largest_context():
    """Qwen3-0.6B on CPU with an 8 GiB budget: check the blocks by hand, then ask for too long a context."""
    text = ("gpu: {device: cpu, reserve: 0}\nmodels:\n"
            "  - {name: q, kind: llm, card: qwen3-0.6b, max_model_len: 40960, max_num_seqs: 4}\n")
    plan = _plan(text, total=8 * GiB)
    est = plan.models[0].estimate
    block = 16 * 2 * 28 * 8 * 128 * 2
    assert plan.kv_blocks == (8 * GiB - est.need_bytes) // block
    assert plan.max_concurrent_sequences == plan.kv_blocks // math.ceil(40960 / 16)
    small = _plan(text, total=int(1.6 * GiB))
    assert not small.fits
    (problem,) = small.problems
    largest = small.kv_tokens // 256 * 256
    assert "max_model_len 40,960 needs" in problem and f"largest that fits: {largest:,} tokens" in problem
    assert "kv_cache_dtype: fp8" in problem
    assert plan_stack(parse_stack(text.replace("40960", str(largest))), int(1.6 * GiB), "t").fits


def test_fixed_share_smaller_than_the_estimate():
    plan = _plan("models:\n  - {name: w, kind: asr, card: whisper-large-v3-turbo, memory: 1GiB}\n")
    (problem,) = plan.problems
    assert problem.startswith("w needs") and "share is 1.00 GiB" in problem and "or to auto" in problem


def test_fixed_shares_over_the_card_say_what_to_shrink():
    text = ("gpu: {reserve: 1GiB}\nmodels:\n"
            "  - {name: w, kind: asr, card: whisper-small, memory: 12GiB}\n"
            "  - {name: t, kind: tts, card: mms-tts-eng, memory: 12GiB}\n")
    plan = _plan(text)
    (problem,) = plan.problems
    assert "1.00 GiB more than the 23.00 GiB" in problem and "shrink them toward their estimates" in problem


def test_percent_and_auto_shares():
    plan = _plan("gpu: {auto_margin: 0.2}\nmodels:\n  - {name: t, kind: tts, card: mms-tts-eng, memory: 10%}\n"
                 "  - {name: e, kind: embedding, card: all-minilm-l6-v2}\n")
    tts, emb = plan.models
    assert tts.share_bytes == int(24 * GiB * 0.10)
    assert emb.share_bytes % (64 * MiB) == 0 and emb.share_bytes >= emb.estimate.need_bytes * 1.2
    assert plan.fits and plan.llm is None


def test_isolation_none_pays_one_context():
    plan = _plan("models:\n  - {name: t, kind: tts, card: mms-tts-eng, isolation: none}\n"
                 "  - {name: e, kind: embedding, card: all-minilm-l6-v2, isolation: none}\n")
    assert plan.models[0].estimate.context_bytes > 0 and plan.models[1].estimate.context_bytes == 0


def test_a_model_with_no_files_and_no_shipped_config():
    with pytest.raises(PlanInputError, match="no shipped model config matches it"):
        _plan("models:\n  - {name: mystery, kind: llm, path: /nowhere/MysteryLM-7B}\n")
    with pytest.raises(PlanInputError, match="config 'qwen9' is not in"):
        _plan("models:\n  - {name: q, kind: llm, config: qwen9}\n")
