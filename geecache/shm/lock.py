"""Process-shared robust pthread mutexes in the arena, through ctypes.

Why robust mutexes: when the holder dies (SIGKILL at any instruction) the
kernel marks the mutex and the next ``lock`` returns EOWNERDEAD instead of
blocking forever, so the caller repairs what the dead holder guarded and
marks it consistent.  fcntl record locks also die with their process, but
are dropped when the process closes *any* fd of the file and cost two
syscalls; ``multiprocessing.Lock`` is a plain semaphore that stays taken.

Fast path: ``trylock``/``unlock`` through ``PyDLL`` (no GIL release, ~0.2 µs
each); only a contended lock goes through ``CDLL``'s blocking call, which
releases the GIL while it waits in the kernel.

``Locks`` is the arena's lock region as one object: ``held(i)`` is the
critical section every module uses, and ``acquire`` is the one place a lock
is waited for (so a bounded wait, ``timeout=``, lives here and nowhere else).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import time

from ..errors import ArenaError, LockTimeoutError
from .layout import LOCK_SIZE, REPAIRS_AT, U32

_EBUSY = errno.EBUSY
_ETIMEDOUT = errno.ETIMEDOUT
EOWNERDEAD = errno.EOWNERDEAD
_M32 = 0xFFFFFFFF

_PTHREAD_PROCESS_SHARED = 1
_PTHREAD_MUTEX_ROBUST = 1
_PTHREAD_MUTEX_ERRORCHECK = 2  # relocking by the holder is EDEADLK, not a hang


def _libs() -> tuple[ctypes.CDLL, ctypes.PyDLL]:
    for name in (None, ctypes.util.find_library("pthread")):
        c = ctypes.CDLL(name)
        if hasattr(c, "pthread_mutex_consistent"):
            return c, ctypes.PyDLL(name)
    raise ArenaError("robust pthread mutexes are not available on this platform")


_c, _py = _libs()


def _fn(lib, name: str):
    f = getattr(lib, name)
    f.argtypes = [ctypes.c_void_p]
    f.restype = ctypes.c_int
    return f


trylock = _fn(_py, "pthread_mutex_trylock")
unlock = _fn(_py, "pthread_mutex_unlock")
lock_blocking = _fn(_c, "pthread_mutex_lock")
consistent = _fn(_py, "pthread_mutex_consistent")


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


_timedlock = _c.pthread_mutex_timedlock
_timedlock.argtypes = [ctypes.c_void_p, ctypes.POINTER(_Timespec)]
_timedlock.restype = ctypes.c_int


def _lock_within(addr: int, timeout: float) -> int:
    """pthread_mutex_timedlock with a deadline *timeout* seconds from now (GIL released)."""
    # The deadline is absolute CLOCK_REALTIME, as POSIX defines it for mutexes.
    ns = time.time_ns() + max(0, int(timeout * 1e9))
    return _timedlock(addr, ctypes.byref(_Timespec(ns // 1_000_000_000, ns % 1_000_000_000)))


def init(addr: int) -> None:
    """Initialise a process-shared, robust, error-checking mutex at *addr*."""
    attr = ctypes.create_string_buffer(64)  # >= sizeof(pthread_mutexattr_t)
    rc = _c.pthread_mutexattr_init(attr)
    rc = rc or _c.pthread_mutexattr_setpshared(attr, _PTHREAD_PROCESS_SHARED)
    rc = rc or _c.pthread_mutexattr_setrobust(attr, _PTHREAD_MUTEX_ROBUST)
    rc = rc or _c.pthread_mutexattr_settype(attr, _PTHREAD_MUTEX_ERRORCHECK)
    rc = rc or _c.pthread_mutex_init(ctypes.c_void_p(addr), attr)
    _c.pthread_mutexattr_destroy(attr)
    if rc:
        raise ArenaError(f"pthread mutex init failed: {errno.errorcode.get(rc, rc)}")


def acquire(addr: int, rc: int | None = None, timeout: float | None = None) -> bool:
    """Take the mutex at *addr*; True when its previous holder died holding it.

    On True the caller must repair the state the mutex guards and then call
    ``consistent(addr)`` before ``unlock`` (otherwise the mutex becomes
    unusable).  If the caller dies while repairing, the next one sees True
    again and repairs again, so repairs must be idempotent.  With *timeout*
    (seconds) a contended wait gives up with LockTimeoutError; None waits
    as long as the holder lives (a dead holder always frees the wait).
    """
    if rc is None:  # else the caller already tried (EOWNERDEAD there: it holds the mutex)
        rc = trylock(addr)
    if rc == _EBUSY:
        rc = lock_blocking(addr) if timeout is None else _lock_within(addr, timeout)
    if rc == 0:
        return False
    if rc == EOWNERDEAD:
        return True
    if rc == _ETIMEDOUT and timeout is not None:
        raise LockTimeoutError(f"lock at {addr:#x} still held after {timeout} s")
    word = ctypes.c_int.from_address(addr).value
    owner = ctypes.c_int.from_address(addr + 8).value
    raise ArenaError(f"pthread_mutex_lock failed: {errno.errorcode.get(rc, rc)}"
                     f" (lock word {word:#x}, owner {owner}, pid {os.getpid()})")


def base_address(buf) -> int:
    """The address of the first byte of a writable buffer (the mapping)."""
    anchor = ctypes.c_char.from_buffer(buf)
    addr = ctypes.addressof(anchor)
    del anchor  # keep no export alive, so the mmap can be closed later
    return addr


def _no_wait_count(i: int, ns: int) -> None:
    """``Locks.on_wait`` of a lock region nobody counts waits for (the write log's)."""


class _Held:
    """``with locks.held(i):`` -- lock *i* for the block (trylock inline, then ``Locks.acquire``)."""

    __slots__ = ("_locks", "_i", "_addr", "_timeout")

    def __init__(self, locks: "Locks", i: int, timeout: float | None) -> None:
        self._locks = locks
        self._i = i
        self._addr = locks.addrs[i]
        self._timeout = timeout

    def __enter__(self) -> None:
        rc = trylock(self._addr)
        if rc:
            self._locks.acquire(self._i, rc, self._timeout)

    def __exit__(self, *exc) -> None:
        unlock(self._addr)


class Locks:
    """The lock region of one arena mapping: ``n`` robust mutexes, ``LOCK_SIZE`` apart.

    *repair(i)* is called (with lock *i* held) when the previous holder of
    lock *i* died inside its critical section; it must make what the lock
    guards consistent again, idempotently.  ``repairs()`` counts those calls.
    """

    def __init__(self, mm, off: int, n: int, repair) -> None:
        self._mm = mm
        self._off = off
        self._repair = repair
        base = base_address(mm)
        #: Mutex addresses, for hot paths that inline trylock/unlock.
        self.addrs = [base + off + i * LOCK_SIZE for i in range(n)]
        self._held = [_Held(self, i, None) for i in range(n)]
        #: ``on_wait(i, ns)`` is called after each wait for a lock another process held
        #: (the arena counts them in this process's stat row); if blank, nothing.
        self.on_wait = _no_wait_count

    @staticmethod
    def init_region(mm, off: int, n: int) -> None:
        """Initialise the *n* mutexes of a new segment's lock region at *off*."""
        base = base_address(mm)
        for i in range(n):
            init(base + off + i * LOCK_SIZE)

    def held(self, i: int, timeout: float | None = None) -> _Held:
        """A context manager holding lock *i* (repairing first if its holder died)."""
        return self._held[i] if timeout is None else _Held(self, i, timeout)

    def acquire(self, i: int, rc: int | None = None, timeout: float | None = None) -> None:
        """Take lock *i*, repairing what it guards if its holder died.

        Hot paths call ``trylock(addrs[i])`` inline and come here with its
        nonzero result *rc* (EOWNERDEAD from trylock means we already hold
        it).  *timeout*: see ``acquire`` at module level.
        """
        addr = self.addrs[i]
        if rc is None:
            rc = trylock(addr)
        if rc == _EBUSY:
            rc = self._wait(i, addr, timeout)
        if acquire(addr, rc, timeout):
            at = self._off + i * LOCK_SIZE + REPAIRS_AT
            U32.pack_into(self._mm, at, (U32.unpack_from(self._mm, at)[0] + 1) & _M32)
            self._repair(i)
            consistent(addr)

    def _wait(self, i: int, addr: int, timeout: float | None) -> int:
        """Block for lock *i*, held by another process; its pthread result code.

        The one place a contended lock is waited for, so ``on_wait`` sees
        every wait (timed out or not) and nothing else: the uncontended
        trylock costs no clock read.
        """
        t0 = time.monotonic_ns()
        try:
            return lock_blocking(addr) if timeout is None else _lock_within(addr, timeout)
        finally:
            self.on_wait(i, time.monotonic_ns() - t0)

    def release(self, i: int) -> None:
        """Unlock lock *i* (held by this thread)."""
        unlock(self.addrs[i])

    def repairs(self) -> int:
        """How many times a lock's guarded state was repaired after its holder died."""
        return sum(U32.unpack_from(self._mm, self._off + i * LOCK_SIZE + REPAIRS_AT)[0]
                   for i in range(len(self.addrs)))
