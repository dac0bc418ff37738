"""One estimator per model kind, each reading real files (or a shipped card) without loading weights."""
from __future__ import annotations

from budget.estimate import Estimate
from budget.estimators.asr import estimate_asr
from budget.estimators.embedding import estimate_embedding
from budget.estimators.llm import estimate_llm
from budget.estimators.tts import estimate_tts
from budget.estimators.vad import estimate_vad

ESTIMATORS = {"llm": estimate_llm, "asr": estimate_asr, "tts": estimate_tts,
              "embedding": estimate_embedding, "vad": estimate_vad}


def estimate(spec, on_gpu: bool) -> Estimate:
    """The estimate for one stack model entry."""
    return ESTIMATORS[spec.kind](spec, on_gpu)
