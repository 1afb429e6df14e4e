"""What a supervisor leaves in the OS, recorded so a SIGKILLed one is cleaned up.

A supervisor killed with SIGKILL cannot unlink its arena segment (256 MiB of
``/dev/shm`` by default) or remove its metrics directory.  It records both in
``<data dir>/supervisor-<port>.state``; the next supervisor on that port
reclaims them when the recorded pid is dead.  One file per port, because
several hosts of a test or a local cluster may share one data dir.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

from .metrics import MULTIPROC_PREFIX
from .shm.pids import alive
from .shm.segment import PREFIX as SEGMENT_PREFIX

log = logging.getLogger("geecache.supervisor")

_SHM_DIR = Path("/dev/shm")


def state_path(data_dir: Path, port: int) -> Path:
    """The state file of the supervisor serving *port*."""
    return Path(data_dir) / f"supervisor-{port}.state"


def reclaim(path: Path) -> None:
    """Remove the arena and metrics dir a dead predecessor recorded in *path*."""
    try:
        state = json.loads(path.read_text())
        pid, arena, metrics_dir = int(state["pid"]), str(state["arena"]), state.get("metrics_dir")
    except FileNotFoundError:
        return
    except (OSError, ValueError, KeyError, TypeError):
        log.warning("ignoring unreadable state file %s", path)
        path.unlink(missing_ok=True)
        return
    if alive(pid):
        return  # still running (or its pid was reused): nothing of it is ours to remove
    # Only names this project creates: a corrupt file must not delete anything else.
    segment = _SHM_DIR / arena
    if arena.startswith(SEGMENT_PREFIX) and "/" not in arena and segment.exists():
        segment.unlink(missing_ok=True)
        log.warning("removed arena %s left by supervisor %d, which died without cleaning up", arena, pid)
    if metrics_dir and Path(metrics_dir).name.startswith(MULTIPROC_PREFIX):
        shutil.rmtree(metrics_dir, ignore_errors=True)
    path.unlink(missing_ok=True)


def record(path: Path, arena: str, metrics_dir: str | None) -> None:
    """Record this supervisor's arena and (created) metrics dir in *path*."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"pid": os.getpid(), "arena": arena, "metrics_dir": metrics_dir}))
        tmp.replace(path)
    except OSError as exc:  # serving matters more than cleaning up after a crash
        log.warning("cannot record state in %s (%s): a SIGKILL would leak arena %s", path, exc, arena)


def forget(path: Path) -> None:
    """Drop the record at a clean exit (everything it names is already removed)."""
    path.unlink(missing_ok=True)
