"""Signals every process of a host agrees on: which stop it, and what a forked child resets.

A leaf module (only the standard library), so the worker, the registrar and
the arbiter all import the one definition.
"""

from __future__ import annotations

import ctypes
import os
import signal

#: Signals that stop a process gracefully (SIGQUIT: the supervisor without waiting).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)
#: The supervisor's business (worker count, reload, warm restart): a child ignores them (the
#: registrar handles SIGUSR1 itself: sent by the supervisor, it stops keeping the lease).
SUPERVISOR_ONLY = (signal.SIGTTIN, signal.SIGTTOU, signal.SIGHUP, signal.SIGUSR1)
#: Every signal the arbiter handles; its handlers only enqueue and wake the loop.
ARBITER_SIGNALS = (signal.SIGCHLD, *STOP_SIGNALS, *SUPERVISOR_ONLY)
_PR_SET_PDEATHSIG = 1


def reset_child_signals(mask: set[int] | frozenset[int] = frozenset()) -> None:
    """First thing in a freshly forked child: drop the supervisor's handlers, hold the stop signals.

    A signal must not run the supervisor's handlers here (they would write
    into its self-pipe and queue the signal in this copy of the arbiter,
    where it is lost).  Stop signals stay blocked (on top of *mask*, the
    mask the supervisor had before the fork) until the child's own loop
    can handle them, so a SIGTERM during boot is held, not lost and not
    fatal: each child's body unblocks them once its handlers exist.
    """
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGCHLD, *STOP_SIGNALS):
        signal.signal(sig, signal.SIG_DFL)
    for sig in SUPERVISOR_ONLY:
        signal.signal(sig, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_SETMASK, set(mask) | set(STOP_SIGNALS))


def die_with_parent(supervisor_pid: int) -> None:
    """Ask the kernel for SIGTERM when the supervisor dies; then close the race.

    The supervisor may have died between fork and prctl, in which case the
    signal will never come: the getppid check catches that.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: the periodic getppid check still ends orphans
    if os.getppid() != supervisor_pid:
        os._exit(0)
