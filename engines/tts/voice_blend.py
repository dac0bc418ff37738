"""Kokoro-FastAPI's voice syntax, `a`, `a+b` and `a(2)+b(1)`: read by the Kokoro backend, which averages the
style tables, and by the realtime session, which checks each part names a voice before the model is asked."""
from __future__ import annotations

import re

from engines.errors import UnknownVoiceError

_PART = re.compile(r"^\s*([A-Za-z0-9][\w.-]*?)\s*(?:\(\s*(\d+(?:\.\d*)?|\.\d+)\s*\))?\s*$")


def parse_blend(name: str) -> list[tuple[str, float]]:
    """Kokoro-FastAPI's voice syntax: `a`, `a+b`, `a(2)+b(1)` -> [(voice, weight)]; a malformed part is a 400."""
    parts = []
    for text in name.split("+"):
        match = _PART.match(text)
        if match is None or (match.group(2) is not None and float(match.group(2)) <= 0):
            raise UnknownVoiceError(f"voice {name!r} is not a voice name or a blend of them; write a blend like "
                                    "jf_alpha+jf_nezumi or jf_alpha(3)+jm_kumo(1) (weights above 0)")
        parts.append((match.group(1), float(match.group(2) or 1)))
    return parts


def blend_name(parts: list[tuple[str, float]]) -> str:
    """The one spelling of a blend: `a` alone, `a+b` when the weights are equal, else `a(3)+b(1)`."""
    if len(parts) == 1:
        return parts[0][0]
    if len({w for _, w in parts}) == 1:
        return "+".join(v for v, _ in parts)
    return "+".join(f"{v}({w:g})" for v, w in parts)
