"""The conversation's items, as the client sees them (GA realtime items) and as the chat template reads them."""
from __future__ import annotations

from dataclasses import dataclass

MESSAGE, CALL, CALL_OUTPUT = "message", "function_call", "function_call_output"


@dataclass(slots=True)
class HistoryItem:
    id: str
    role: str                  # user, assistant or system; a call is the assistant's, its output the tool's
    text: str | None           # a message's text (None: a user turn still being transcribed), a call's arguments,
    part: str = "input_text"   # an output's output. A message's content part: input_text, input_audio, output_*
    pieces: list[tuple[str, float]] | None = None  # an answer's spoken pieces and where each one's audio ends (ms)
    type: str = MESSAGE
    call_id: str | None = None
    name: str | None = None    # the function a call names
    status: str = "completed"

    def as_item(self) -> dict:
        if self.type == CALL:
            return {"id": self.id, "type": CALL, "object": "realtime.item", "status": self.status,
                    "call_id": self.call_id, "name": self.name, "arguments": self.text}
        if self.type == CALL_OUTPUT:
            return {"id": self.id, "type": CALL_OUTPUT, "object": "realtime.item", "status": self.status,
                    "call_id": self.call_id, "output": self.text}
        key = "transcript" if self.part.endswith("audio") else "text"
        return item_dict(self.id, self.role, {"type": self.part, key: self.text}, self.status)


def item_dict(item_id: str, role: str, part: dict, status: str = "completed") -> dict:
    return {"id": item_id, "type": "message", "object": "realtime.item", "status": status, "role": role,
            "content": [part]}


def chat_messages(history: list[HistoryItem]) -> list[dict]:
    """Items to Chat Completions messages: calls join the assistant message before them, outputs are tool turns."""
    messages: list[dict] = []
    for item in history:
        if item.type == CALL:
            call = {"id": item.call_id, "type": "function", "function": {"name": item.name, "arguments": item.text}}
            if messages and messages[-1]["role"] == "assistant":
                messages[-1].setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": "", "tool_calls": [call]})
        elif item.type == CALL_OUTPUT:
            messages.append({"role": "tool", "tool_call_id": item.call_id, "content": item.text or ""})
        else:
            messages.append({"role": item.role, "content": item.text or ""})
    return messages
