"""What a supervisor leaves in the OS, recorded so a SIGKILLed one is cleaned up.

A supervisor killed with SIGKILL cannot unlink its arena segment (256 MiB of
``/dev/shm`` by default) or remove its metrics directory.  It records both in
``<data dir>/supervisor-<port>.state``; the next supervisor on that port
reclaims them when the recorded pid is dead.  One file per port, because
several hosts of a test or a local cluster may share one data dir.

A supervisor stopped for a warm restart (SIGUSR1, ``geecache.host.warm``)
records its arena with a ``warm`` entry instead of removing it: ``reclaim``
then hands the arena to the next supervisor rather than deleting it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path

from geecache.observability.metrics import MULTIPROC_PREFIX
from .shm.pids import alive
from .shm.segment import PREFIX as SEGMENT_PREFIX

log = logging.getLogger("geecache.supervisor")

_SHM_DIR = Path("/dev/shm")


def state_path(data_dir: Path, port: int) -> Path:
    """The state file of the supervisor serving *port*."""
    return Path(data_dir) / f"supervisor-{port}.state"


#: How long a start waits for the predecessor that left a warm arena to finish exiting
#: (it records the arena just before it exits, so a restart may race its last moments).
WARM_EXIT_WAIT = 10.0


def reclaim(path: Path) -> tuple[str, dict] | None:
    """Remove the arena and metrics dir a dead predecessor recorded in *path*.

    An arena left for a warm restart is not removed: ``(name, warm entry)`` is
    returned for ``geecache.host.warm.reattach`` to take up or discard.
    """
    try:
        state = json.loads(path.read_text())
        pid, arena, metrics_dir = int(state["pid"]), str(state["arena"]), state.get("metrics_dir")
        warm = state.get("warm")
        if warm is not None and not isinstance(warm, dict):
            raise TypeError("warm")
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        log.warning("ignoring unreadable state file %s", path)
        path.unlink(missing_ok=True)
        return None
    if warm is not None:
        deadline = time.monotonic() + WARM_EXIT_WAIT
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
    if alive(pid):
        return None  # still running (or its pid was reused): nothing of it is ours to remove
    if metrics_dir and Path(metrics_dir).name.startswith(MULTIPROC_PREFIX):
        shutil.rmtree(metrics_dir, ignore_errors=True)
    # Only names this project creates: a corrupt file must not delete anything else.
    segment = _SHM_DIR / arena
    ours = arena.startswith(SEGMENT_PREFIX) and "/" not in arena
    if ours and warm is not None and segment.exists():
        return arena, warm  # the state file is rewritten by whoever takes it up
    if ours and segment.exists():
        segment.unlink(missing_ok=True)
        log.warning("removed arena %s left by supervisor %d, which died without cleaning up", arena, pid)
    path.unlink(missing_ok=True)
    return None


def record(path: Path, arena: str, metrics_dir: str | None, warm: dict | None = None) -> bool:
    """Record this supervisor's arena and (created) metrics dir in *path*; False if it cannot.

    *warm* (``geecache.host.warm.record``) marks the arena as left for the next start.
    """
    state = {"pid": os.getpid(), "arena": arena, "metrics_dir": metrics_dir}
    if warm is not None:
        state["warm"] = warm
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        tmp.replace(path)
    except OSError as exc:  # serving matters more than cleaning up after a crash
        log.warning("cannot record state in %s (%s): a SIGKILL would leak arena %s", path, exc, arena)
        return False
    return True


def forget(path: Path) -> None:
    """Drop the record at a clean exit (everything it names is already removed)."""
    path.unlink(missing_ok=True)
