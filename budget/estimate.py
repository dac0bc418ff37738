"""What one model needs on the card, part by part, and the per-process costs every worker pays."""
from __future__ import annotations

from dataclasses import dataclass, field

from budget.units import MiB

# A CUDA context plus the library handles a worker creates (cuBLAS workspace, kernels loaded lazily).
# Measured figures replace these through a calibration record (budget.calibration).
CUDA_CONTEXT_BYTES = {"torch": 512 * MiB, "ctranslate2": 384 * MiB, "onnxruntime": 448 * MiB}
# On CPU the "context" is the resident memory of a worker process with its runtime imported.
CPU_PROCESS_BYTES = {"torch": 320 * MiB, "ctranslate2": 160 * MiB,
                     "onnxruntime": 360 * MiB}  # a worker imports torch too (the seam's messages), then onnxruntime


class PlanInputError(ValueError):
    """A model the planner cannot size (no files, no card, bad config); the message names the fix."""


@dataclass(slots=True)
class Estimate:
    """Peak bytes of one model, split the way the report shows them; KV is sized later by the planner."""

    name: str
    kind: str
    source: str
    runtime: str
    parameters: int
    weights_bytes: int
    activation_bytes: int
    context_bytes: int = 0
    graph_bytes: int = 0
    kv_bytes_per_token: int = 0
    max_model_len: int = 0
    block_size: int = 0
    dtype: str = ""
    storage: str = ""   # how the weights are held when not plainly `dtype`: a GGUF type kept packed, int8, int4-g32
    batch: int = 0      # ASR: the utterances decoded at once that the activations are planned for
    quantized_alternatives: dict[str, int] = field(default_factory=dict)  # a 16-bit LLM's weights as int8 / int4
    formulas: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def need_bytes(self) -> int:
        """Everything but the KV cache: what must fit before the model can serve at all."""
        return self.weights_bytes + self.activation_bytes + self.context_bytes + self.graph_bytes


def context_bytes(runtime: str, on_gpu: bool) -> tuple[int, str]:
    """Per-worker cost and the sentence explaining it."""
    if on_gpu:
        n = CUDA_CONTEXT_BYTES[runtime]
        return n, f"CUDA context + library workspaces of one {runtime} worker process ≈ {n // MiB} MiB"
    n = CPU_PROCESS_BYTES[runtime]
    return n, f"resident memory of one {runtime} worker process on CPU ≈ {n // MiB} MiB"
