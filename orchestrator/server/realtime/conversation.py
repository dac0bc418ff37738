"""The conversation: its items in order, where each one sits (`previous_item_id`), and the events that say so.

Every change to the items goes through `Conversation`, which sends the matching conversation.item.* event;
the chat template reads the same items as Chat Completions messages.
"""
from __future__ import annotations

from dataclasses import dataclass

from orchestrator.server.realtime import server_events as e
from orchestrator.server.realtime.events import ClientError

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
        return {"id": self.id, "type": MESSAGE, "object": "realtime.item", "status": self.status, "role": self.role,
                "content": [{"type": self.part, key: self.text}]}


class Conversation:
    def __init__(self, send: e.Send) -> None:
        self.send = send
        self.items: list[HistoryItem] = []

    def get(self, item_id: str, param: str = "item_id") -> HistoryItem:
        for item in self.items:
            if item.id == item_id:
                return item
        raise ClientError(f"item {item_id!r} is not in the conversation", "item_not_found", param)

    def has(self, item_id: str) -> bool:
        return any(item.id == item_id for item in self.items)

    @property
    def last_id(self) -> str | None:
        return self.items[-1].id if self.items else None

    def previous_id(self, item: HistoryItem) -> str | None:
        """The id of the item before this one (None at the start, or for an item not in the conversation)."""
        at = next((i for i, held in enumerate(self.items) if held is item), 0)
        return self.items[at - 1].id if at else None

    def position(self, previous_item_id: str | None) -> int:
        """Where an item goes: after previous_item_id, at the end (None), or first ("root")."""
        if previous_item_id is None:
            return len(self.items)
        if previous_item_id == "root":
            return 0
        for i, item in enumerate(self.items):
            if item.id == previous_item_id:
                return i + 1
        raise ClientError(f"previous_item_id {previous_item_id!r} is not in the conversation", "invalid_value",
                          "previous_item_id")

    async def add(self, item: HistoryItem, previous_item_id: str | None = None) -> None:
        """Insert the item (after previous_item_id, else at the end) and say so."""
        self.items.insert(self.position(previous_item_id), item)
        await self.send(e.ItemAdded(previous_item_id=self.previous_id(item), item=item.as_item()))

    async def add_after(self, item: HistoryItem, anchor: str | None) -> None:
        """Insert the item right after `anchor`; at the end when there is none or it has been deleted."""
        await self.add(item, anchor if anchor is not None and self.has(anchor) else None)

    async def done(self, item: HistoryItem) -> None:
        await self.send(e.ItemDone(previous_item_id=self.previous_id(item), item=item.as_item()))

    def discard(self, item: HistoryItem) -> None:
        """Take an item out without an event (an answer that ended before it said anything)."""
        if item in self.items:
            self.items.remove(item)

    async def retrieve(self, item_id: str) -> None:
        await self.send(e.ItemRetrieved(item=self.get(item_id).as_item()))

    async def delete(self, item_id: str) -> None:
        self.items.remove(self.get(item_id))
        await self.send(e.ItemDeleted(item_id=item_id))

    async def truncate(self, item_id: str, content_index: int, audio_end_ms: int) -> None:
        """Cut an answer's transcript at what the client really played: the pieces whose audio ends by then, and
        the share of the piece playing at that moment (by words); the next turn sees only that."""
        item = self.get(item_id)
        if item.role != "assistant" or item.pieces is None:
            kind = f"{item.role} {item.part}" if item.type == MESSAGE else item.type
            raise ClientError(f"item {item_id!r} is a {kind} item; only an assistant's audio message can be "
                              "truncated", "invalid_value", "item_id")
        if content_index != 0:
            raise ClientError("the item has one content part; content_index must be 0", "invalid_value",
                              "content_index")
        total = item.pieces[-1][1] if item.pieces else 0.0
        if audio_end_ms > total + 1:
            raise ClientError(f"audio_end_ms {audio_end_ms} is past the end of the item's audio ({total:.0f} ms)",
                              "invalid_value", "audio_end_ms")
        kept, start = [], 0.0
        for text, end in item.pieces:
            if end <= audio_end_ms:
                kept.append(text)
            elif audio_end_ms > start:
                words = text.split()
                kept.append(" ".join(words[:int(len(words) * (audio_end_ms - start) / (end - start))]))
                break
            start = end
        item.text = " ".join(k for k in kept if k)
        item.pieces = [(t, end) for t, end in item.pieces if end <= audio_end_ms]
        await self.send(e.ItemTruncated(item_id=item_id, content_index=0, audio_end_ms=audio_end_ms))

    def messages(self, items: list[HistoryItem] | None = None) -> list[dict]:
        """Items as Chat Completions messages: calls join the assistant message before them, outputs are tool turns.

        Only finished items are read: an answer still being given is not part of its own prompt."""
        messages: list[dict] = []
        for item in self.items if items is None else items:
            if item.status == "in_progress" and item.role == "assistant":
                continue
            if item.type == CALL:
                call = {"id": item.call_id, "type": "function",
                        "function": {"name": item.name, "arguments": item.text}}
                if messages and messages[-1]["role"] == "assistant":
                    messages[-1].setdefault("tool_calls", []).append(call)
                else:
                    messages.append({"role": "assistant", "content": "", "tool_calls": [call]})
            elif item.type == CALL_OUTPUT:
                messages.append({"role": "tool", "tool_call_id": item.call_id, "content": item.text or ""})
            else:
                messages.append({"role": item.role, "content": item.text or ""})
        return messages
