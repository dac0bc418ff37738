"""Which TTS backend serves a stack entry: Kokoro or Piper for an ONNX model, VITS for a transformers folder."""
from __future__ import annotations

from pathlib import Path

from engines.tts.backend import TTSBackend


def backend_name(spec) -> str:
    """`backend:` when the stack names one; else what the files are: an .onnx with a voices file beside it (or named
    by `voices:`) is Kokoro, an .onnx with its .onnx.json a Piper voice, a folder with a config.json VITS."""
    if spec.backend != "auto":
        return spec.backend
    from budget.kokoro_files import looks_like_kokoro

    if looks_like_kokoro(spec.path, getattr(spec, "voices", None)):
        return "kokoro"
    return "piper" if is_piper_path(spec.path) else "vits"


def backend_class(spec) -> type[TTSBackend]:
    name = backend_name(spec)
    if name == "kokoro":
        from engines.tts.kokoro import KokoroBackend
        return KokoroBackend
    if name == "piper":
        from engines.tts.piper import PiperBackend
        return PiperBackend
    from engines.tts.vits import VitsBackend
    return VitsBackend


def is_piper_path(path: str | None) -> bool:
    if not path:
        return False
    local = Path(path).expanduser()
    return local.suffix in (".onnx", ".json") or (local.is_dir() and any(local.glob("*.onnx")))
