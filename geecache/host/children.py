"""The kinds of child a host forks: each owns its body and its respawn policy.

The arbiter knows no kind by name.  Every turn it asks each kind to bring
its children in line (``manage``), hands each reaped child back to its kind
(``exited``), and runs ``body`` in the forked process.  A new kind (a
worker watched by heartbeats, a reloader) is one more class here.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time

from geecache import metrics
from workers.worker import WORKER_BOOT_ERROR, worker_main

log = logging.getLogger("geecache.supervisor")

#: A worker dying sooner than this after its fork counts as a boot failure.
BOOT_WINDOW = 2.0
#: This many boot failures in a row (no worker surviving BOOT_WINDOW between them) halt the host.
MAX_BOOT_FAILURES = 5
#: Registrar respawn backoff: first delay, cap (seconds); reset after it ran REGISTRAR_STABLE.
REGISTRAR_BACKOFF = (0.5, 30.0)
REGISTRAR_STABLE = 60.0
#: Extra time after graceful_timeout before stragglers get SIGKILL.
KILL_MARGIN = 2.0


def describe_status(status: int) -> str:
    """``exit status 1`` / ``killed by SIGKILL``: for log lines."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            return f"killed by {signal.Signals(sig).name}"
        except ValueError:
            return f"killed by signal {sig}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"


class Child:
    """A forked process the arbiter owns: its kind, pid, slot (workers only) and start time."""

    __slots__ = ("kind", "pid", "slot", "started")

    def __init__(self, kind: "ChildKind", pid: int, slot: int | None) -> None:
        self.kind = kind
        self.pid = pid
        self.slot = slot
        self.started = time.monotonic()

    @property
    def label(self) -> str:
        """``worker 2`` / ``registrar``: how log lines name it."""
        return self.kind.name if self.slot is None else f"{self.kind.name} {self.slot}"


class ChildKind:
    """A kind of child: what it runs (``body``) and when it is (re)spawned (``manage``, ``exited``)."""

    #: How log lines name this kind's children.
    name = "child"

    def manage(self, arb) -> None:
        """Spawn what is missing and retire what is extra (called every turn, not when stopping)."""

    def exited(self, arb, child: Child, status: int) -> None:
        """*child* was reaped with *status*; while ``arb.stopping`` only bookkeeping, no respawn."""

    def listener(self, arb, slot: int | None) -> socket.socket | None:
        """The listening socket the child keeps (every other one is closed in it)."""
        return None

    def body(self, arb, child_slot: int | None, sock: socket.socket | None) -> None:
        """Run in the forked child; never returns into the arbiter's loop."""
        raise NotImplementedError


class Workers(ChildKind):
    """The HTTP workers: ``target`` slots, resized by SIGTTIN/SIGTTOU, respawned at once.

    A worker that exits with WORKER_BOOT_ERROR, or workers dying within
    BOOT_WINDOW of their fork MAX_BOOT_FAILURES times in a row, halt the host
    instead of a restart storm.
    """

    name = "worker"

    def __init__(self, target: int) -> None:
        self.target = target
        self.retiring: dict[int, float] = {}  # pid told to stop by SIGTTOU -> when to SIGKILL it
        self.boot_failures = 0

    def live(self, arb) -> list[Child]:
        """The workers serving (not retiring)."""
        return [c for c in arb.children_of(self) if c.pid not in self.retiring]

    def grow(self, arb) -> None:
        """SIGTTIN: one worker more, if the arena has a stat row for it."""
        rows = self.target + 1 + len(self.retiring) + (1 if arb.cfg.etcd else 0)
        if rows > arb.cfg.process_rows:
            log.warning("SIGTTIN refused: %d workers%s%s would need %d of the arena's %d per-process "
                        "stat rows (process_rows); worker count stays %d", self.target + 1,
                        f", {len(self.retiring)} retiring" if self.retiring else "",
                        " and the registrar" if arb.cfg.etcd else "", rows, arb.cfg.process_rows,
                        self.target)
            return
        self.target += 1
        log.info("SIGTTIN: worker count now %d", self.target)

    def shrink(self) -> None:
        """SIGTTOU: one worker fewer, never fewer than one."""
        self.target = max(1, self.target - 1)
        log.info("SIGTTOU: worker count now %d", self.target)

    def manage(self, arb) -> None:
        workers = self.live(arb)
        now = time.monotonic()
        # A worker that has outlived the boot window proves the host can boot.
        if any(now - w.started >= BOOT_WINDOW for w in workers):
            self.boot_failures = 0
        used = {w.slot for w in workers}
        for slot in range(self.target):
            if slot not in used:
                arb.spawn(self, slot)
        for w in workers:
            if w.slot >= self.target:
                log.info("retiring worker %d (pid %d)", w.slot, w.pid)
                self.retiring[w.pid] = time.monotonic() + arb.cfg.graceful_timeout + KILL_MARGIN
                arb.send(w.pid, signal.SIGTERM)
                arb.drop_listener(w.slot)
        for pid, deadline in self.retiring.items():
            if time.monotonic() >= deadline:
                log.warning("retired worker (pid %d) did not stop in time; killing it", pid)
                arb.send(pid, signal.SIGKILL)

    def exited(self, arb, child: Child, status: int) -> None:
        metrics.mark_process_dead(child.pid)
        retired = self.retiring.pop(child.pid, None) is not None
        if arb.stopping:
            return
        how = describe_status(status)
        if retired:
            log.info("worker %d (pid %d) retired: %s", child.slot, child.pid, how)
            return
        lived = time.monotonic() - child.started
        log.warning("worker %d (pid %d) died after %.1fs: %s", child.slot, child.pid, lived, how)
        if os.WIFEXITED(status) and os.WEXITSTATUS(status) == WORKER_BOOT_ERROR:
            arb.halt(f"worker {child.slot} failed to boot ({how}; its error is logged above); "
                     "stopping instead of restarting it")
        elif lived < BOOT_WINDOW:
            self.boot_failures += 1
            if self.boot_failures >= MAX_BOOT_FAILURES:
                arb.halt(f"workers died within {BOOT_WINDOW:g}s of starting "
                         f"{self.boot_failures} times in a row (last: {how}); "
                         "stopping instead of restarting them")
        else:
            self.boot_failures = 0

    def listener(self, arb, slot: int | None) -> socket.socket | None:
        return arb.listener(slot)

    def body(self, arb, child_slot: int | None, sock: socket.socket | None) -> None:
        worker_main(arb.cfg, sock, arb.arena, arb.pid)


class Registrar(ChildKind):
    """The host's one etcd session (with ``--etcd``): respawned with exponential backoff."""

    name = "registrar"

    def __init__(self) -> None:
        self.failures = 0
        self.due = 0.0  # monotonic time it may be respawned

    def manage(self, arb) -> None:
        if time.monotonic() >= self.due and not arb.children_of(self):
            arb.spawn(self, None)

    def exited(self, arb, child: Child, status: int) -> None:
        if arb.stopping:
            return
        if time.monotonic() - child.started >= REGISTRAR_STABLE:
            self.failures = 0
        delay = min(REGISTRAR_BACKOFF[0] * 2 ** self.failures, REGISTRAR_BACKOFF[1])
        self.failures += 1
        self.due = time.monotonic() + delay
        log.warning("registrar (pid %d) exited: %s; respawning in %.1fs", child.pid,
                    describe_status(status), delay)

    def body(self, arb, child_slot: int | None, sock: socket.socket | None) -> None:
        # Imported here only: grpc must never be loaded in the forking supervisor.
        from geecache.registry import registrar_main

        cfg = arb.cfg
        os._exit(registrar_main(cfg.etcd, cfg.advertise, cfg.lease_ttl, arb.arena.write_ring))
