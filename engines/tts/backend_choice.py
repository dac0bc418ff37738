"""Which TTS backend serves a stack entry: VITS for a transformers folder, Piper for an ONNX voice."""
from __future__ import annotations

from pathlib import Path

from engines.tts.backend import TTSBackend


def backend_class(spec) -> type[TTSBackend]:
    """`backend:` when the stack names one; else what the files are (a Piper voice has an .onnx, VITS a config.json)."""
    if spec.backend == "piper" or (spec.backend == "auto" and is_piper_path(spec.path)):
        from engines.tts.piper import PiperBackend
        return PiperBackend
    from engines.tts.vits import VitsBackend
    return VitsBackend


def is_piper_path(path: str | None) -> bool:
    if not path:
        return False
    local = Path(path).expanduser()
    return local.suffix in (".onnx", ".json") or (local.is_dir() and any(local.glob("*.onnx")))
