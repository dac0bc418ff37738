"""A Piper voice planned on a card runs there or is refused: the CPU build of onnxruntime falls back to the CPU
silently, which would leave the plan holding card memory for a model that is not on the card."""
from __future__ import annotations

import pytest

from budget.planner import plan_stack
from budget.runtimes import onnxruntime_has_cuda
from budget.units import GiB
from engines.tts.piper import PiperBackend
from orchestrator.stack_file import parse_stack

pytestmark = pytest.mark.skipif(onnxruntime_has_cuda() is not False, reason="needs the CPU build of onnxruntime")


def test_piper_on_a_card_without_onnxruntimes_cuda_is_refused(real_models):
    """Failed before the fix: the session asked for CUDA, got the CPU, and the voice loaded as if on the card."""
    voice = PiperBackend(real_models / "piper-joe", device="cuda:0")
    with pytest.raises(ValueError, match="runs en_US-joe-medium.onnx on CPUExecutionProvider, not CUDA"):
        voice.load()


def test_plan_notes_that_this_machines_onnxruntime_cannot_reach_the_card(real_models):
    stack = parse_stack(f"""
gpu: {{device: 0, memory: 24GiB}}
models:
  - {{name: voice, kind: tts, path: {real_models / "piper-joe"}}}
""")
    plan = plan_stack(stack, 24 * GiB, "test card")
    assert any("voice: this machine's onnxruntime has no CUDA provider" in note for note in plan.notes)
