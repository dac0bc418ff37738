"""A measured record replaces the planner's guesses for the same model, and only for it."""
import json

import pytest

from budget.calibration import Calibration, Measurement, load_calibration, save_calibration
from budget.estimate import PlanInputError
from budget.planner import plan_stack
from budget.units import GiB, MiB
from orchestrator.stack_file import parse_stack

STACK = ("models:\n  - {name: q, kind: llm, config: qwen3-0.6b, max_model_len: 4096}\n"
         "  - {name: w, kind: asr, config: whisper-small}\n")


def test_measured_parts_replace_estimates(tmp_path):
    record = Calibration(device="NVIDIA H100 80GB HBM3", measurements=[
        Measurement(model="w", kind="asr", activation_bytes=700 * MiB, context_bytes=300 * MiB)])
    save_calibration(record, tmp_path / "cal.json")
    stack = parse_stack(STACK)
    before = plan_stack(stack, 24 * GiB, "card")
    after = plan_stack(stack, 24 * GiB, "card", load_calibration(tmp_path / "cal.json"))
    whisper_before, whisper_after = before.models[1].estimate, after.models[1].estimate
    assert whisper_after.activation_bytes == 700 * MiB and whisper_after.context_bytes == 300 * MiB
    assert whisper_after.weights_bytes == whisper_before.weights_bytes  # weights are facts, never replaced
    assert "measured on NVIDIA H100" in whisper_after.formulas["activations"]
    assert after.models[0].estimate.activation_bytes == before.models[0].estimate.activation_bytes
    assert after.kv_tokens != before.kv_tokens  # the LLM's rest moved with the corrected share


def test_record_for_another_checkpoint_is_not_applied():
    record = Calibration(device="d", measurements=[Measurement(model="w", kind="asr", parameters=1, context_bytes=0)])
    plan = plan_stack(parse_stack(STACK), 24 * GiB, "card", record)
    assert plan.models[1].estimate.context_bytes > 0
    assert any("not applied" in n for n in plan.notes)


def test_bad_record(tmp_path):
    (tmp_path / "cal.json").write_text(json.dumps({"device": "d", "measurements": [{"model": "w"}]}))
    with pytest.raises(PlanInputError, match="not a calibration record"):
        load_calibration(tmp_path / "cal.json")
