"""Server-sent events as OpenAI streams them: `data: {json}` lines, ending in `data: [DONE]`."""
from __future__ import annotations

import json
from typing import Any


def event(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


DONE = "data: [DONE]\n\n"
