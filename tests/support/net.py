"""Loopback helpers for tests: free ports, waiting for a listener, reading a reply to its end."""

from __future__ import annotations

import socket
import threading
import time

# Every port free_port has handed out in this process, guarded by _handed_out_lock.
# The kernel may give a just-closed port to the very next bind(0): two calls in a
# row (a data port, then its admin port) then name the same port, and the server
# refuses its own config.  About 1 in 400 pairs on a 28k-port range; a suite makes
# hundreds of pairs.
_handed_out: set[int] = set()
_handed_out_lock = threading.Lock()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago, and that no earlier call
    in this process returned (so ports chosen one after another are distinct)."""
    with _handed_out_lock:
        for _ in range(1000):
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            if port not in _handed_out:
                _handed_out.add(port)
                return port
        # Nearly the whole range handed out: start over rather than fail.
        _handed_out.clear()
        _handed_out.add(port)
        return port


def wait_for_port(port: int, host: str = "127.0.0.1", timeout: float = 15.0) -> None:
    """Block until something accepts on host:port, or raise TimeoutError."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s")


def read_to_eof(s: socket.socket) -> bytes:
    """Every byte *s* receives until the peer closes it (a reset ends it too: what came first counts)."""
    chunks = []
    while True:
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)
