"""CPU and memory of any process of this host, from /proc (Linux).

prometheus_client's process collector reads only its own process, and its
multiprocess mode collects none: the admin plane reads every child of the
host here instead (the pids come from the heartbeat cells).  One read of
``/proc/<pid>/stat`` per process and scrape; nothing on the request path.

Leaf module (standard library only).
"""

from __future__ import annotations

import os
from typing import NamedTuple

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _boot_time() -> float:
    try:
        with open("/proc/stat", "rb") as f:
            for line in f:
                if line.startswith(b"btime "):
                    return float(line.split()[1])
    except OSError:
        pass
    return 0.0


_BOOT = _boot_time()


class ProcStat(NamedTuple):
    """One process's counters as Prometheus' ``process_*`` series name them."""

    cpu_seconds: float         # user + system
    resident_bytes: int
    virtual_bytes: int
    start_time: float          # seconds since the epoch
    open_fds: int | None       # None when /proc/<pid>/fd is not readable


def read(pid: int) -> ProcStat | None:
    """*pid*'s counters, or None when it is gone (or this is no Linux)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces or ')'.
    rest = raw[raw.rindex(b")") + 2:].split()
    utime, stime, start, vsize, rss = (int(rest[i]) for i in (11, 12, 19, 20, 21))
    try:
        fds: int | None = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        fds = None
    return ProcStat((utime + stime) / _TICKS, rss * _PAGE, vsize, _BOOT + start / _TICKS, fds)
