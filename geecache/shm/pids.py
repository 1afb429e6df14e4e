"""Is a process alive?  Used to break ownership stamped by a dead pid."""

from __future__ import annotations

import os


def alive(pid: int) -> bool:
    """True when *pid* runs; a zombie (killed, not yet reaped) counts as dead.

    A recycled pid reads as alive: the cost is a stale stamp lasting until
    that process exits, never a wrong value.
    """
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return True  # no /proc: trust kill(0)
    # The state letter follows the parenthesised command name.
    state = stat[stat.rfind(b")") + 2:stat.rfind(b")") + 3]
    return state not in (b"Z", b"X")
