"""VAD (Silero): a few hundred thousand parameters, run per 32 ms chunk; sized from the weights the package ships."""
from __future__ import annotations

import importlib.util
from pathlib import Path

from budget.estimate import Estimate, context_bytes
from budget.tensors import read_safetensors_header
from budget.units import MiB, human

SILERO_PARAMETERS = 309_633  # silero_vad_16k.safetensors as shipped with silero-vad 6
SILERO_STATE_BYTES = 1 * MiB  # LSTM state, one 512-sample chunk and its STFT


def silero_weights_file() -> Path | None:
    """The package's safetensors file, found without importing silero_vad (which imports torch)."""
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        return None
    file = Path(next(iter(spec.submodule_search_locations))) / "data" / "silero_vad_16k.safetensors"
    return file if file.is_file() else None


def estimate_vad(spec, on_gpu: bool) -> Estimate:
    file = silero_weights_file()
    if file:
        tensors = read_safetensors_header(file)
        params, weights, source = sum(t.numel for t in tensors), sum(t.nbytes for t in tensors), str(file)
    else:
        params, weights, source = SILERO_PARAMETERS, SILERO_PARAMETERS * 4, "silero-vad 6 (published size)"
    formulas = {"weights": f"{params:,} fp32 parameters = {human(weights)}",
                "activations": f"LSTM state + one 512-sample chunk ≈ {human(SILERO_STATE_BYTES)}"}
    context, formulas["context"] = context_bytes("torch", on_gpu)
    return Estimate(spec.name, "vad", source, "torch", params, weights, SILERO_STATE_BYTES, context,
                    dtype="float32", formulas=formulas)
