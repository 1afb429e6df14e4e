"""What the host's process tests read from a supervisor's log: which children are ready.

The supervisor logs ``worker N (pid P) ready after Xs`` once it has seen a
worker's first heartbeat (``geecache.host.pulse``): from then on the worker
serves, and killing it is never a boot failure.
"""

from __future__ import annotations

import re

from tests.support.proc import Host, alive

_READY = re.compile(r"worker \d+ \(pid (\d+)\) ready")
_REGISTRAR = re.compile(r"started registrar \(pid (\d+)\)")


def ready_workers(h: Host) -> list[int]:
    """Live workers of *h* the supervisor has logged as ready (serving)."""
    logged = {int(p) for p in _READY.findall(h.log())}
    return [p for p in h.workers() if p in logged]


def registrars(h: Host) -> list[int]:
    """Live registrar pids of *h*, oldest first."""
    return [int(p) for p in _REGISTRAR.findall(h.log()) if alive(int(p))]
