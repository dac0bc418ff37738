"""Ids the server gives sessions, items, responses and events, in OpenAI's prefix_hex style."""
from __future__ import annotations

import uuid


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:20]}"
