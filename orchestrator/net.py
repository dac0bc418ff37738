"""Loopback helpers shared by the launcher, the tests and the benches: a free port, and waiting for /health."""
from __future__ import annotations

import socket
import subprocess
import time

import httpx


class ProcessExited(RuntimeError):
    """The server's process ended before it answered healthy."""

    def __init__(self, code: int) -> None:
        super().__init__(f"the process exited with code {code} before it was healthy")
        self.code = code


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, process: subprocess.Popen | None, timeout_s: float, poll_s: float = 0.25) -> None:
    """Return once GET `url` answers 200; ProcessExited if `process` ends first, TimeoutError after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and (code := process.poll()) is not None:
            raise ProcessExited(code)
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(poll_s)
    raise TimeoutError(f"{url} did not answer 200 within {timeout_s:g} s")
