"""TTS (VITS / MMS-TTS): weights, and the HiFi-GAN decoder peak for the longest piece synthesised at once."""
from __future__ import annotations

import math

from budget.architectures import vits_parameters
from budget.cards import find_model_files
from budget.estimate import Estimate, PlanInputError, context_bytes
from budget.estimators.weights import checkpoint_weights
from budget.units import dtype_bytes, human

FRAMES_PER_CHAR = 8  # ~4 spectrogram frames per character at normal speed, doubled for slow speech (speed 0.5)
LIVE_COPIES = 4  # a resblock holds its input, two conv outputs and the running sum


def estimate_tts(spec, on_gpu: bool) -> Estimate:
    files = find_model_files(spec.name, spec.path, spec.card)
    cfg = files.json("config.json")
    if cfg is None or cfg.get("model_type") != "vits":
        found = cfg.get("model_type") if cfg else "no config.json"
        raise PlanInputError(f"model {spec.name!r}: {files.describe()} is not a VITS / MMS-TTS model ({found}); "
                             "the TTS engine serves transformers' VITS family")
    b = dtype_bytes(spec.dtype)
    params, weights, formula = checkpoint_weights(spec.name, files, spec.dtype, lambda: vits_parameters(cfg))
    formulas = {"weights": formula}
    tokens = 2 * spec.max_input_chars + 1  # characters interleaved with blanks
    frames = FRAMES_PER_CHAR * spec.max_input_chars
    widest = max(cfg["upsample_initial_channel"] // 2 ** (i + 1) * math.prod(cfg["upsample_rates"][: i + 1])
                 for i in range(len(cfg["upsample_rates"])))
    decoder = LIVE_COPIES * widest * frames * b
    text = cfg["num_attention_heads"] * tokens**2 * b * 2 + tokens * cfg["ffn_dim"] * b
    flows = 8 * cfg["hidden_size"] * frames * b
    activation = int(decoder + max(text, flows))
    formulas["activations"] = (f"{spec.max_input_chars} chars → {frames} frames; HiFi-GAN peak {LIVE_COPIES} × "
                               f"{widest} channel·samples per frame × frames × {b:g} B = {human(decoder)} + "
                               f"max(text encoder {human(text)}, flows {human(flows)}) = {human(activation)}")
    context, formulas["context"] = context_bytes("torch", on_gpu)
    return Estimate(spec.name, "tts", files.describe(), "torch", params, weights, activation, context,
                    dtype=spec.dtype, formulas=formulas)
