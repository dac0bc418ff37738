"""The pipe between the server and a worker: locked sends, and errors that cross it keep their type."""
from __future__ import annotations

import threading
from multiprocessing.connection import Connection

from engines.errors import EngineBusyError, EngineDeadError

# What a worker may raise that the server maps to a status; anything else arrives as a RuntimeError.
ERROR_TYPES: dict[str, type[Exception]] = {cls.__name__: cls for cls in (ValueError, EngineBusyError, EngineDeadError)}


class Channel:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._lock = threading.Lock()

    def send(self, message: tuple) -> bool:
        """Send one message; False when the other side is gone."""
        try:
            with self._lock:
                self.conn.send(message)
            return True
        except (BrokenPipeError, ConnectionResetError, EOFError, OSError):
            return False

    def recv(self) -> tuple | None:
        """The next message, or None when the other side has closed."""
        try:
            return self.conn.recv()
        except (EOFError, ConnectionResetError, OSError):
            return None

    def close(self) -> None:
        self.conn.close()


def encode_error(error: BaseException) -> tuple[str, str]:
    for name, cls in ERROR_TYPES.items():
        if isinstance(error, cls):
            return name, str(error)
    return "RuntimeError", f"{type(error).__name__}: {error}"


def decode_error(encoded: tuple[str, str]) -> Exception:
    name, message = encoded
    return ERROR_TYPES.get(name, RuntimeError)(message)
