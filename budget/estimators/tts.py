"""TTS (VITS / MMS-TTS, Piper, Kokoro): weights, and the decoder peak for the longest piece synthesised at once."""
from __future__ import annotations

import math
from pathlib import Path

from budget.architectures import vits_parameters
from budget.kokoro_files import CHUNK_TOKENS, check_kokoro_model, kokoro_files, looks_like_kokoro, voice_shapes
from budget.model_files import find_model_files, piper_voice_files
from budget.estimate import Estimate, PlanInputError, context_bytes
from budget.estimators.weights import checkpoint_weights
from budget.units import dtype_bytes, human

FRAMES_PER_CHAR = 8  # ~4 spectrogram frames per character at normal speed, doubled for slow speech (speed 0.5)
LIVE_COPIES = 4  # a resblock holds its input, two conv outputs and the running sum


# Piper's exported VITS ("medium" and "high" quality): the decoder's channels and upsampling, which its .onnx.json
# does not state. "low" and "x_low" voices are smaller, so this bounds them from above.
PIPER_DECODER = {"upsample_initial_channel": 512, "upsample_rates": [8, 8, 2, 2]}
# Kokoro-82M on onnxruntime: its peak grows with the audio one call makes, ~23 MiB a second (measured on CPU, int8
# model: 0.4 GiB for 17.6 s, 0.8 GiB for 35 s, 1.6 GiB for 72 s), and a phoneme lasts ~0.07-0.08 s at speed 1.
KOKORO_BYTES_PER_SECOND = 24 * 2**20
KOKORO_SECONDS_PER_PHONEME = 0.1


def _decoder_peak(cfg: dict, chars: int, b: float) -> tuple[int, int, int]:
    """(bytes, widest channel·samples per frame, frames) of the HiFi-GAN decoder on the longest piece."""
    frames = FRAMES_PER_CHAR * chars
    widest = max(cfg["upsample_initial_channel"] // 2 ** (i + 1) * math.prod(cfg["upsample_rates"][: i + 1])
                 for i in range(len(cfg["upsample_rates"])))
    return int(LIVE_COPIES * widest * frames * b), widest, frames


def estimate_piper(spec, files, on_gpu: bool) -> Estimate:
    """A Piper voice: its fp32 ONNX graph's bytes are its weights; the decoder peak as VITS's, at Piper's widths."""
    found = piper_voice_files(files.file or files.directory)
    if found is None:
        raise PlanInputError(f"model {spec.name!r}: {files.describe()} has no Piper .onnx voice")
    onnx = found[0]
    weights = onnx.stat().st_size
    decoder, widest, frames = _decoder_peak(PIPER_DECODER, spec.max_input_chars, 4)
    formulas = {"weights": f"{onnx.name}: {human(weights)} of float32 ONNX initializers",
                "activations": f"{spec.max_input_chars} chars → {frames} frames; decoder peak {LIVE_COPIES} × {widest} "
                               f"channel·samples per frame × frames × 4 B = {human(decoder)}"}
    context, formulas["context"] = context_bytes("onnxruntime", on_gpu)
    return Estimate(spec.name, "tts", f"{onnx} (Piper)", "onnxruntime", weights // 4, weights, decoder, context,
                    dtype="float32", formulas=formulas)


def estimate_kokoro(spec, on_gpu: bool) -> Estimate:
    """Kokoro: its initializers as stored (int8, fp16 or fp32), and the decoder's peak for the longest chunk."""
    if not spec.path:
        raise PlanInputError(f"model {spec.name!r}: a Kokoro TTS needs path: its .onnx model (with its voices file "
                             "beside it, or named by voices:)")
    files = kokoro_files(Path(spec.path), spec.voices)
    header = check_kokoro_model(files.model)
    shapes = voice_shapes(files.voices)
    seconds = CHUNK_TOKENS * KOKORO_SECONDS_PER_PHONEME
    activations = int(seconds * KOKORO_BYTES_PER_SECOND)
    formulas = {"weights": f"{files.model.name}: {header.parameters / 1e6:.1f} M parameters in "
                           f"{human(header.weight_bytes)} of ONNX initializers; {len(shapes)} voices in "
                           f"{files.voices.name}",
                "activations": f"a chunk of at most {CHUNK_TOKENS} phonemes (fewer below speed 1) → ≤ {seconds:g} s of "
                               f"24 kHz audio × {human(KOKORO_BYTES_PER_SECOND)} per second of decoder state "
                               f"= {human(activations)}"}
    context, formulas["context"] = context_bytes("onnxruntime", on_gpu)
    return Estimate(spec.name, "tts", f"{files.model} (Kokoro)", "onnxruntime", header.parameters,
                    header.weight_bytes, activations, context, dtype=header.weight_dtype, formulas=formulas)


def estimate_tts(spec, on_gpu: bool) -> Estimate:
    if spec.backend == "kokoro" or (spec.backend == "auto" and looks_like_kokoro(spec.path, spec.voices)):
        return estimate_kokoro(spec, on_gpu)
    files = find_model_files(spec.name, spec.path, spec.config)
    if spec.backend == "piper" or (spec.backend == "auto" and not files.config_only and (
            (files.file is not None and files.file.suffix == ".onnx") or any(files.directory.glob("*.onnx")))):
        return estimate_piper(spec, files, on_gpu)
    cfg = files.json("config.json")
    if cfg is None or cfg.get("model_type") != "vits":
        found = cfg.get("model_type") if cfg else "no config.json"
        raise PlanInputError(f"model {spec.name!r}: {files.describe()} is not a VITS / MMS-TTS model ({found}); "
                             "the TTS engine serves transformers' VITS family")
    b = dtype_bytes(spec.dtype)
    params, weights, formula = checkpoint_weights(spec.name, files, spec.dtype, lambda: vits_parameters(cfg))
    formulas = {"weights": formula}
    tokens = 2 * spec.max_input_chars + 1  # characters interleaved with blanks
    decoder, widest, frames = _decoder_peak(cfg, spec.max_input_chars, b)
    text = cfg["num_attention_heads"] * tokens**2 * b * 2 + tokens * cfg["ffn_dim"] * b
    flows = 8 * cfg["hidden_size"] * frames * b
    activation = int(decoder + max(text, flows))
    formulas["activations"] = (f"{spec.max_input_chars} chars → {frames} frames; HiFi-GAN peak {LIVE_COPIES} × "
                               f"{widest} channel·samples per frame × frames × {b:g} B = {human(decoder)} + "
                               f"max(text encoder {human(text)}, flows {human(flows)}) = {human(activation)}")
    context, formulas["context"] = context_bytes("torch", on_gpu)
    return Estimate(spec.name, "tts", files.describe(), "torch", params, weights, activation, context,
                    dtype=spec.dtype, formulas=formulas)
