"""The pipe between the server and a worker: typed messages pickled whole, locked sends, and a byte count."""
from __future__ import annotations

import pickle
import threading
from multiprocessing.connection import Connection
from typing import Any


class Channel:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._lock = threading.Lock()
        self.last_recv_bytes = 0     # the size of the latest message read, for tests and benchmarks

    def send(self, message: Any) -> bool:
        """Send one message; False when the other side is gone."""
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        try:
            with self._lock:
                self.conn.send_bytes(data)
            return True
        except (BrokenPipeError, ConnectionResetError, EOFError, OSError):
            return False

    def recv(self) -> Any | None:
        """The next message, or None when the other side has closed."""
        try:
            data = self.conn.recv_bytes()
        except (EOFError, ConnectionResetError, OSError):
            return None
        self.last_recv_bytes = len(data)
        return pickle.loads(data)

    def close(self) -> None:
        self.conn.close()
