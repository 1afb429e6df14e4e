"""Loopback helpers for tests: free ports, waiting for a listener, reading a reply to its end."""

from __future__ import annotations

import random
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


def _ephemeral_range() -> tuple[int, int]:
    """The kernel's range for the local ports of outgoing connections (and of bind(0))."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(x) for x in f.read().split())
        return low, high
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def consecutive_free_ports(n: int, attempts: int = 2000) -> int:
    """A base port such that base..base+n-1 on 127.0.0.1 were all free a moment ago, none of
    them handed out before in this process (by this or ``free_port``).

    The block lies below the ephemeral range: bind(0) there always returns an odd port and
    outgoing connections take the even ones, so the port after bind(0)'s was often one a
    connection (or its TIME_WAIT) held, and under a busy suite no block was found at all.
    Each port is probed with SO_REUSEADDR, as the servers bind.
    """
    low, _ = _ephemeral_range()
    floor = 10000 if low > 10000 + n else 1024
    rng = random.Random()
    with _handed_out_lock:
        for _ in range(attempts):
            base = rng.randrange(floor, low - n)
            block = range(base, base + n)
            if any(port in _handed_out for port in block):
                continue
            socks = []
            try:
                for port in block:
                    s = socket.socket()
                    socks.append(s)
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    s.bind(("127.0.0.1", port))
            except OSError:
                continue
            finally:
                for s in socks:
                    s.close()
            _handed_out.update(block)
            return base
    raise RuntimeError(f"no {n} consecutive free ports found below {low}")


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
