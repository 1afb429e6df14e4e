"""Create, attach and unlink the POSIX shared-memory segment behind an arena.

This opens the segment with ``_posixshmem`` (what
``multiprocessing.shared_memory`` uses underneath) and maps it with ``mmap``
itself, so CPython's resource tracker never hears of it: before 3.13 the
tracker unlinks a segment when *any* attached process exits
(cpython#82300), which would destroy the cache under the other workers.
Cleanup is therefore the creator's job (``Arena.unlink`` in a ``finally``).
"""

from __future__ import annotations

import mmap
import os
import secrets

import _posixshmem

PREFIX = "geecache-"


def _path(name: str) -> str:
    return "/" + name


def create(size: int, name: str | None = None) -> tuple[str, mmap.mmap]:
    """A new zero-filled segment of *size* bytes; a unique ``geecache-`` name if None."""
    flags = os.O_CREAT | os.O_EXCL | os.O_RDWR
    while True:
        chosen = name or PREFIX + secrets.token_hex(6)
        try:
            fd = _posixshmem.shm_open(_path(chosen), flags, mode=0o600)
        except FileExistsError:
            if name is not None:
                raise
            continue
        break
    try:
        os.ftruncate(fd, size)
        mm = mmap.mmap(fd, size)
    except OSError:
        _posixshmem.shm_unlink(_path(chosen))
        raise
    finally:
        # The mapping keeps the memory; no fd stays open to leak into children.
        os.close(fd)
    return chosen, mm


def attach(name: str) -> mmap.mmap:
    """Map the existing segment *name* (FileNotFoundError if there is none)."""
    fd = _posixshmem.shm_open(_path(name), os.O_RDWR, mode=0o600)
    try:
        return mmap.mmap(fd, os.fstat(fd).st_size)
    finally:
        os.close(fd)


def unlink(name: str) -> None:
    """Remove *name* from /dev/shm; mappings that exist stay valid until closed."""
    try:
        _posixshmem.shm_unlink(_path(name))
    except FileNotFoundError:
        pass
