"""ASR (faster-whisper): CTranslate2 weights at the serving compute type, encoder + beam-search decoder peak."""
from __future__ import annotations

from budget.architectures import whisper_parameters
from budget.model_files import find_model_files
from budget.estimate import Estimate, PlanInputError, context_bytes
from budget.tensors import TensorInfo, read_ct2_model, read_safetensors_dir
from budget.units import human

# CTranslate2 compute types → (bytes of a quantized matrix element, bytes of every other float).
_COMPUTE = {
    "float32": (4, 4), "float16": (2, 2), "bfloat16": (2, 2), "int16": (2, 4),
    "int8": (1, 4), "int8_float32": (1, 4), "int8_float16": (1, 2), "int8_bfloat16": (1, 2),
}
_STORED = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "I8": "int8_float16", "I16": "int16"}
AUDIO_FRAMES = 1500  # 30 s window after the conv stem
MEL_FRAMES = 3000


def resolve_compute_type(requested: str, stored: str, on_gpu: bool) -> str:
    """What CTranslate2 will run: `default` keeps the stored type, except half types on CPU become float32."""
    chosen = stored if requested in ("default", "auto") else requested
    if not on_gpu and chosen in ("float16", "bfloat16"):
        return "float32"
    if not on_gpu and chosen in ("int8_float16", "int8_bfloat16"):
        return "int8_float32"
    return chosen


def _ct2_bytes(variables: list[TensorInfo], compute: str) -> int:
    """Matrices (rank ≥ 2) take the quantized width, int types plus one fp32 scale a row; the rest the float width."""
    quant, other = _COMPUTE[compute]
    total = 0
    for v in variables:
        if v.name.endswith("_scale"):
            continue
        if len(v.shape) >= 2:
            total += v.numel * quant + (v.shape[0] * 4 if compute.startswith("int") else 0)
        else:
            total += v.numel * other if v.is_float else v.nbytes
    return total


def estimate_asr(spec, on_gpu: bool) -> Estimate:
    files = find_model_files(spec.name, spec.path, spec.config)
    cfg = files.json("config.json") or {}
    formulas: dict[str, str] = {}
    model_bin = files.directory / "model.bin"
    if not files.config_only and model_bin.is_file():
        variables = read_ct2_model(model_bin)
        matrices = [v for v in variables if not v.name.endswith("_scale")]
        stored = _STORED.get(next((v.dtype for v in matrices if len(v.shape) >= 2), "F16"), "float16")
        compute = resolve_compute_type(spec.compute_type, stored, on_gpu)
        params = sum(v.numel for v in matrices)
        weights = _ct2_bytes(variables, compute)
        formulas["weights"] = (f"{len(variables)} CTranslate2 variables ({params:,} values, stored {stored}) "
                               f"at compute type {compute} = {human(weights)}")
        source = f"{files.directory} (CTranslate2 model.bin)"
        dims = _dims_from_ct2(matrices)
    else:
        if cfg.get("model_type") != "whisper":
            raise PlanInputError(f"model {spec.name!r}: {files.describe()} has neither a CTranslate2 model.bin nor "
                                 "a Whisper config.json; point path at a faster-whisper model directory")
        tensors = [] if files.config_only else read_safetensors_dir(files.directory)
        params = sum(t.numel for t in tensors if t.is_float) if tensors else whisper_parameters(cfg)
        stored = str(cfg.get("torch_dtype", "float16"))
        compute = resolve_compute_type(spec.compute_type, "float16" if stored == "float32" else stored, on_gpu)
        quant = _COMPUTE[compute][0]
        weights = int(params * quant)
        formulas["weights"] = (f"{params:,} parameters ({'safetensors headers' if tensors else 'from config'}) × "
                               f"{quant} B at compute type {compute} = {human(weights)}")
        source = f"{files.describe()} (as faster-whisper would convert it)"
        dims = (cfg["d_model"], cfg["decoder_layers"], cfg["encoder_attention_heads"], cfg["encoder_ffn_dim"],
                cfg["vocab_size"], cfg["max_target_positions"], cfg.get("num_mel_bins", 128))
    d, dec_layers, heads, ffn, vocab, target, mels = dims
    b = _COMPUTE[compute][1]
    beams, batch = spec.beam_size, spec.batch_size
    encoder = 4 * AUDIO_FRAMES * d * b + heads * AUDIO_FRAMES**2 * b + AUDIO_FRAMES * ffn * b + mels * MEL_FRAMES * 4
    decoder = beams * (2 * dec_layers * (target + AUDIO_FRAMES) * d * b + 2 * vocab * 4)
    activation = int(batch * (encoder + decoder))
    formulas["activations"] = (f"batch {batch} × (encoder over {AUDIO_FRAMES} frames: hidden, {heads}-head scores, "
                               f"FFN, mel = {human(encoder)}; + {beams} beams × self/cross KV of {dec_layers} "
                               f"decoder layers and fp32 logits = {human(decoder)}) = {human(activation)}")
    context, formulas["context"] = context_bytes("ctranslate2", on_gpu)
    return Estimate(spec.name, "asr", source, "ctranslate2", params, weights, activation, context,
                    dtype=compute, batch=batch, formulas=formulas)


def _dims_from_ct2(variables: list[TensorInfo]) -> tuple[int, int, int, int, int, int, int]:
    """Whisper's shape read back from variable names and shapes (d_model, decoder layers, heads, ...)."""
    by_name = {v.name: v for v in variables}
    try:
        vocab, d = by_name["decoder/embeddings/weight"].shape
        target = by_name["decoder/position_encodings/encodings"].shape[0]
        ffn = by_name["encoder/layer_0/ffn/linear_0/weight"].shape[0]
        mels = by_name["encoder/conv1/weight"].shape[1]
    except KeyError as exc:
        raise PlanInputError(f"CTranslate2 model has no variable {exc}; is it a Whisper model?") from None
    dec_layers = len({v.name.split("/")[1] for v in variables if v.name.startswith("decoder/layer_")})
    return d, dec_layers, max(1, d // 64), ffn, vocab, target, mels
