"""faster-whisper sizing from a real CTranslate2 model.bin, converted here from a tiny random Whisper."""
import os

import pytest
import torch
from ctranslate2.converters.transformers import WhisperLoader
from transformers import WhisperConfig, WhisperForConditionalGeneration

from budget.estimators.asr import estimate_asr
from budget.tensors import read_ct2_model
from orchestrator.stack import ASRSpec

VOCAB = 51865


@pytest.fixture(scope="module")
def ct2_dir(tmp_path_factory):
    """A CTranslate2 Whisper directory written by CTranslate2's own converter spec, stored float16."""
    torch.manual_seed(0)
    config = WhisperConfig(d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=1,
                           decoder_attention_heads=1, encoder_ffn_dim=128, decoder_ffn_dim=128, num_mel_bins=80,
                           vocab_size=VOCAB, max_source_positions=1500, max_target_positions=448)
    model = WhisperForConditionalGeneration(config).eval()
    spec = WhisperLoader().get_model_spec(model)
    spec.register_vocabulary([f"t{i}" for i in range(VOCAB)])
    spec.validate()
    spec.optimize(quantization="float16")
    out = tmp_path_factory.mktemp("faster-whisper-tiny")
    spec.save(str(out))
    return out


def test_reads_every_variable(ct2_dir):
    variables = read_ct2_model(ct2_dir / "model.bin")
    by_name = {v.name: v for v in variables}
    assert by_name["decoder/embeddings/weight"].shape == (VOCAB, 64)
    assert by_name["decoder/embeddings/weight"].dtype == "F16"
    assert by_name["encoder/conv1/weight"].shape == (64, 80, 3)
    # data bytes plus headers make up the file exactly: nothing was skipped or misread
    data = sum(v.nbytes for v in variables)
    assert data < os.path.getsize(ct2_dir / "model.bin") < data + 64 * len(variables) + 4096


def test_estimate_at_stored_and_quantized_types(ct2_dir):
    f16 = estimate_asr(ASRSpec(name="w", kind="asr", path=str(ct2_dir)), on_gpu=True)
    variables = read_ct2_model(ct2_dir / "model.bin")
    assert f16.dtype == "float16"
    assert f16.weights_bytes == sum(v.nbytes for v in variables)  # float16 served as stored
    int8 = estimate_asr(ASRSpec(name="w", kind="asr", path=str(ct2_dir), compute_type="int8_float16"), on_gpu=True)
    assert 0.5 * f16.weights_bytes < int8.weights_bytes < 0.6 * f16.weights_bytes
    cpu = estimate_asr(ASRSpec(name="w", kind="asr", path=str(ct2_dir)), on_gpu=False)
    scalars = sum(v.nbytes for v in variables if not v.is_float)  # int config scalars keep their width
    assert cpu.dtype == "float32" and cpu.weights_bytes - scalars == 2 * (f16.weights_bytes - scalars)
    assert cpu.context_bytes < f16.context_bytes


def test_batch_and_beams_scale_activations(ct2_dir):
    one = estimate_asr(ASRSpec(name="w", kind="asr", path=str(ct2_dir), beam_size=1), on_gpu=True)
    eight = estimate_asr(ASRSpec(name="w", kind="asr", path=str(ct2_dir), beam_size=1, batch_size=8), on_gpu=True)
    assert eight.activation_bytes == 8 * one.activation_bytes
    assert (one.batch, eight.batch) == (1, 8)


def test_the_plan_shows_the_asr_batch_it_planned_for(ct2_dir):
    from budget.planner import plan_stack
    from budget.report import markdown
    from orchestrator.stack import Stack

    stack = Stack.model_validate({"gpu": {"device": "cpu", "memory": "4GiB"}, "models": [
        {"name": "w", "kind": "asr", "path": str(ct2_dir), "batch_size": 4}]})
    plan = plan_stack(stack, 4 << 30, "test")
    assert "w: up to 4 utterances decoded at once" in markdown(plan)


def test_card_for_a_missing_faster_whisper_dir():
    est = estimate_asr(ASRSpec(name="w", kind="asr", path="/nowhere/faster-whisper-large-v3-turbo"), on_gpu=True)
    assert est.parameters == 808_878_080 and est.weights_bytes == 808_878_080 * 2
