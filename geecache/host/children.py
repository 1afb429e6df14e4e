"""The kinds of child a host forks: each owns its body and its respawn policy.

The arbiter knows no kind by name.  Every turn it asks each kind to bring
its children in line (``manage``), hands each reaped child back to its kind
(``exited``), and runs ``body`` in the forked process.  A new kind (a
reloader) is one more class here.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time

from geecache.observability import logs, metrics
from workers.worker import WORKER_BOOT_ERROR, worker_main

log = logging.getLogger("geecache.supervisor")

#: Deaths before ready (no worker becoming ready between them) that halt the host.
MAX_BOOT_FAILURES = 10
#: Respawn delay after a death before ready: first delay, cap (seconds); doubles per failure.
BOOT_BACKOFF = (0.1, 5.0)
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

    __slots__ = ("kind", "pid", "slot", "started", "cell", "ready", "aborted")

    def __init__(self, kind: "ChildKind", pid: int, slot: int | None, cell: int | None = None) -> None:
        self.kind = kind
        self.pid = pid
        self.slot = slot
        self.started = time.monotonic()
        #: Its heartbeat cell (``pulse.Pulses``); None: no watchdog for it.
        self.cell = cell
        #: True once its first heartbeat was seen (it serves); set by the arbiter.
        self.ready = False
        #: monotonic time the watchdog sent SIGABRT (0: not yet).
        self.aborted = 0.0

    @property
    def label(self) -> str:
        """``worker 2`` / ``registrar``: how log lines name it."""
        return self.kind.name if self.slot is None else f"{self.kind.name} {self.slot}"


class ChildKind:
    """A kind of child: what it runs (``body``) and when it is (re)spawned (``manage``, ``exited``)."""

    #: How log lines name this kind's children.
    name = "child"
    #: monotonic time before which ``manage`` spawns nothing (a respawn backoff); the arbiter
    #: wakes for it.
    due = 0.0
    #: What the arbiter sends this kind's children when it stops for a warm restart (SIGUSR1).
    warm_stop_signal = signal.SIGTERM

    def became_ready(self, arb, child: Child) -> None:
        """*child* stamped its first heartbeat: it booted and serves."""

    def manage(self, arb) -> None:
        """Spawn what is missing and retire what is extra (called every turn, not when stopping)."""

    def exited(self, arb, child: Child, status: int) -> None:
        """*child* was reaped with *status*; while ``arb.stopping`` only bookkeeping, no respawn."""

    def listener(self, arb, slot: int | None) -> tuple[socket.socket, socket.socket] | None:
        """The (data, admin) listening sockets the child keeps (every other one is closed in it)."""
        return None

    def body(self, arb, child_slot: int | None, sock: tuple[socket.socket, socket.socket] | None) -> None:
        """Run in the forked child; never returns into the arbiter's loop."""
        raise NotImplementedError


def _slot(worker: Child) -> int:
    """A worker's slot (a Child's slot is None only for a kind without slots, the registrar)."""
    assert worker.slot is not None
    return worker.slot


class Workers(ChildKind):
    """The HTTP workers: ``target`` slots, resized by SIGTTIN/SIGTTOU.

    A worker that had become ready (its first heartbeat: it serves) and dies,
    by any signal or exit, is respawned at once and never stops the host: an
    OOM killer or an operator may kill workers at any rate.  Only boot
    failures do (gunicorn's WORKER_BOOT_ERROR): a worker exiting with
    WORKER_BOOT_ERROR halts the host, and deaths before ready back off
    exponentially (BOOT_BACKOFF, logged) and halt it after MAX_BOOT_FAILURES
    in a row with no worker becoming ready between them.
    """

    name = "worker"

    def __init__(self, target: int) -> None:
        self.target = target
        self.retiring: dict[int, float] = {}  # pid told to stop by SIGTTOU -> when to SIGKILL it
        self.boot_failures = 0
        #: pid -> the config it was forked with: a worker forked with another one than the
        #: arbiter's is replaced (a SIGHUP roll, ``roll``).
        self.cfg_of: dict[int, object] = {}
        #: While a roll runs: the config it started from, to go back to if any new worker cannot
        #: boot (the first one or the last: a roll is abandoned whole, never half kept).
        self.fallback = None
        #: True from a SIGHUP until every worker runs the arbiter's config.
        self.rolling = False
        #: True while an abandoned roll brings the replaced workers back to the old config.
        self.reverting = False

    def roll(self, arb, cfg) -> None:
        """SIGHUP: fork every worker again with *cfg*, one slot at a time (see ``manage``).

        A new worker is forked for one slot; once it is ready the old worker of
        that slot is stopped gracefully (its in-flight requests finish, the
        shared socket keeps accepting) and the next slot follows.  If any new
        worker cannot boot, the roll is abandoned: the old config is restored and
        the workers already replaced are rolled back onto it the same way, one
        slot at a time.  A roll never stops the host.
        """
        if self.fallback is None:
            self.fallback = arb.cfg
        self.reverting = False
        arb.cfg = cfg
        self.target = cfg.workers
        self.rolling = True
        log.info("SIGHUP: replacing the workers one at a time (%d)", self.target)

    def _stale(self, arb) -> list[Child]:
        """Serving workers forked with another config than the arbiter's, lowest slot first."""
        return sorted((w for w in self.live(arb) if self.cfg_of.get(w.pid) is not arb.cfg), key=_slot)

    def _roll_step(self, arb) -> None:
        """Fork the next replacement, unless one is booting or the stat rows are all taken."""
        stale = self._stale(arb)
        fresh = [w for w in self.live(arb) if self.cfg_of.get(w.pid) is arb.cfg]
        if not self.rolling or not stale or any(not w.ready for w in fresh) or time.monotonic() < self.due:
            return
        if len(arb.children) + 1 > arb.cfg.process_rows:
            return  # retirees still hold their rows: wait for them
        used = {w.slot for w in fresh}
        slot = next((w.slot for w in stale if w.slot not in used), None)
        if slot is not None:
            arb.spawn(self, slot)

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

    def _retire(self, arb, w: Child) -> None:
        self.retiring[w.pid] = time.monotonic() + arb.cfg.graceful_timeout + KILL_MARGIN
        arb.send(w.pid, signal.SIGTERM)

    def manage(self, arb) -> None:
        workers = self.live(arb)
        used = {w.slot for w in workers}
        if time.monotonic() >= self.due:
            for slot in range(self.target):
                if slot not in used:
                    arb.spawn(self, slot)
        for w in workers:
            if _slot(w) >= self.target:
                log.info("retiring worker %d (pid %d)", w.slot, w.pid)
                self._retire(arb, w)
                # Only when no worker of this slot stays (two serve it during a roll).
                if not any(o.slot == w.slot and o.pid not in self.retiring for o in self.live(arb)):
                    arb.drop_listener(w.slot)
        self._roll_step(arb)
        for c in arb.children_of(self):
            # Every spawn happens in manage: an untagged child was forked just now, with arb.cfg.
            self.cfg_of.setdefault(c.pid, arb.cfg)
        for pid, deadline in self.retiring.items():
            if time.monotonic() >= deadline:
                log.warning("retired worker (pid %d) did not stop in time; killing it", pid)
                arb.send(pid, signal.SIGKILL)

    def exited(self, arb, child: Child, status: int) -> None:
        metrics.mark_process_dead(child.pid)
        retired = self.retiring.pop(child.pid, None) is not None
        forked_with = self.cfg_of.pop(child.pid, None)
        if arb.stopping:
            return
        how = describe_status(status)
        if retired:
            log.info("worker %d (pid %d) retired: %s", child.slot, child.pid, how)
            return
        if self.rolling and self.fallback is not None and forked_with is arb.cfg and not child.ready:
            self._abandon_roll(arb, child, how)
            return
        lived = time.monotonic() - child.started
        if os.WIFEXITED(status) and os.WEXITSTATUS(status) == WORKER_BOOT_ERROR:
            log.warning("worker %d (pid %d) exited after %.1fs: %s", child.slot, child.pid, lived, how)
            arb.halt(f"worker {child.slot} failed to boot ({how}; its error is logged above); "
                     "stopping instead of restarting it")
        elif child.ready:
            # Never a reason to stop: respawned on this turn, whatever killed it.
            log.warning("worker %d (pid %d) died after %.1fs: %s; respawning it", child.slot,
                        child.pid, lived, how)
        else:
            self.boot_failures += 1
            if self.boot_failures >= MAX_BOOT_FAILURES:
                arb.halt(f"workers died before they were ready {self.boot_failures} times in a row "
                         f"(last: worker {child.slot}, {how}); stopping instead of restarting them")
                return
            delay = min(BOOT_BACKOFF[0] * 2 ** (self.boot_failures - 1), BOOT_BACKOFF[1])
            self.due = max(self.due, time.monotonic() + delay)
            log.warning("worker %d (pid %d) died after %.1fs before it was ready: %s; boot failure "
                        "%d of %d in a row; respawning in %.1fs", child.slot, child.pid, lived, how,
                        self.boot_failures, MAX_BOOT_FAILURES, delay)

    def _abandon_roll(self, arb, child: Child, how: str) -> None:
        """A worker forked with the roll's config died before it was ready: go back to the old one.

        Whichever slot it was (the first or a later one), the workers still on
        the old config keep serving; those already replaced are now the stale
        ones, and the roll machinery (``_roll_step``) forks old-config workers
        for their slots one at a time, as it forked the new ones.
        """
        log.error("SIGHUP: worker %d (pid %d) forked with the new configuration did not start (%s; "
                  "its error is logged above); abandoning the roll, keeping the running workers and "
                  "configuration", child.slot, child.pid, how)
        arb.cfg, self.fallback = self.fallback, None
        self.target = arb.cfg.workers
        self.due = 0.0
        back = self._stale(arb)
        self.rolling = self.reverting = bool(back)
        if back:
            log.warning("SIGHUP: %d worker%s already on the new configuration (%s) will be replaced by "
                        "workers on the previous one", len(back), "s" if len(back) > 1 else "",
                        ", ".join(f"pid {w.pid}" for w in back))

    def became_ready(self, arb, child: Child) -> None:
        if child.pid in self.retiring:
            return
        log.info("worker %d (pid %d) ready after %.2fs", child.slot, child.pid,
                 time.monotonic() - child.started)
        # A worker that boots proves the host can: the failures in a row end here.
        self.boot_failures = 0
        self.due = 0.0
        if not self.rolling or self.cfg_of.get(child.pid) is not arb.cfg:
            return
        for old in self._stale(arb):
            if old.slot == child.slot:
                log.info("SIGHUP: worker %d replaced (pid %d ready); stopping pid %d", child.slot,
                         child.pid, old.pid)
                self._retire(arb, old)
        if not self._stale(arb):
            log.info("SIGHUP: every worker now runs the %s configuration",
                     "previous" if self.reverting else "new")
            self.rolling, self.reverting, self.fallback = False, False, None

    def listener(self, arb, slot: int | None) -> tuple[socket.socket, socket.socket] | None:
        return arb.listener(slot)

    def body(self, arb, child_slot: int | None, sock: tuple[socket.socket, socket.socket] | None) -> None:
        assert sock is not None  # a worker's slot always has its listeners (``listener``)
        data, admin = sock
        worker_main(arb.cfg, data, admin, arb.arena, arb.pid, pulse=arb.child_pulse, write_log=arb.write_log)


class Registrar(ChildKind):
    """The host's one etcd session (with ``--etcd``): respawned with exponential backoff."""

    name = "registrar"
    # Stopped by SIGUSR1 it leaves its lease to expire: peers keep routing this host's keys to
    # it (and fail over to a local load meanwhile) instead of taking writes for them.
    warm_stop_signal = signal.SIGUSR1

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

    def body(self, arb, child_slot: int | None, sock: tuple[socket.socket, socket.socket] | None) -> None:
        # Imported here only: grpc must never be loaded in the forking supervisor (the
        # registry loads aetcd lazily too; this keeps a future top-level import out of it).
        from geecache.cluster.registry import registrar_main

        logs.set_role("registrar")
        cfg = arb.cfg
        # seeded: the supervisor wrote [advertise] into the ring already, so the ring version
        # first moves with the list read from etcd (a warm restart's workers wait for it).
        os._exit(registrar_main(cfg.etcd, cfg.advertise, cfg.lease_ttl, arb.arena.write_ring,
                                pulse=arb.child_pulse, seeded=True))
