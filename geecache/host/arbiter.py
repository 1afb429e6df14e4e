"""The arbiter: one loop that owns the listening sockets, the arena and every child.

Modelled on gunicorn's arbiter: signal handlers only enqueue the signal and
wake the loop through a self-pipe; the loop waits, reaps, dispatches each
queued signal to its ``handle_<name>`` method, and asks every child kind
(``children``) to bring its processes in line.

- SIGCHLD: reap; a dead worker that had become ready is respawned on the next
  turn (well under 1 s), whatever killed it and however often; the arena and
  its cached data survive it.
- Ready and alive are told by heartbeats (``pulse``): each child stamps its
  cell from its event loop.  One that stays silent for ``worker_timeout``
  (not ready by then, or its loop stuck) gets SIGABRT, then SIGKILL
  ABORT_GRACE later, and is replaced; the log says why.
- Only boot failures stop the host (exit status 3): a worker exiting with
  WORKER_BOOT_ERROR, or MAX_BOOT_FAILURES deaths before ready in a row
  (respawned with exponential backoff until then).
- SIGTERM/SIGINT: close the listener, SIGTERM the children (workers finish
  in-flight requests within ``graceful_timeout``), SIGKILL stragglers, exit 0.
  SIGQUIT: the same without the grace.  A second SIGINT/SIGQUIT hurries.
- SIGTTIN/SIGTTOU: one worker more/fewer (never fewer than one; never more
  than the arena's ``process_rows`` hold).
- SIGHUP: read the configuration again (``reload``) and replace the workers
  one at a time with processes forked with it, each old one stopped once its
  replacement is ready; the arena and the sockets stay.  What cannot change
  in a running host is logged and kept.
- SIGUSR1: stop as SIGTERM does, but leave the arena for the next start on
  this port and data dir to reattach (``warm``; ``main`` records it), and
  the registrar leaves its etcd lease to expire instead of revoking it.
- With ``--etcd``, a registrar child holds the host's etcd session and
  writes the member list into the arena; it is respawned with backoff.  The
  arbiter never imports grpc (a gRPC client in a process that forks breaks
  its children), only that child does.
"""

from __future__ import annotations

import collections
import copy
import logging
import os
import select
import signal
import socket
import time

from ..writelog import WriteLog
from .children import KILL_MARGIN, Child, ChildKind, Registrar, Workers
from geecache.observability import logs

from . import reload
from .pulse import Pulse, Pulses, beat_interval
from .sdnotify import Notifier
from geecache.signals import ARBITER_SIGNALS, die_with_parent, reset_child_signals

log = logging.getLogger("geecache.supervisor")

#: The loop wakes at least this often even without signals.
TICK = 1.0
#: Seconds between the watchdog's SIGABRT and its SIGKILL (a stopped process ignores SIGABRT).
ABORT_GRACE = 1.0
EXIT_BOOT_FAILED = 3


def bind(cfg, reuseport: bool, admin: bool = False) -> socket.socket:
    """A listening TCP socket on cfg.host:cfg.port, or the admin port's (SO_REUSEPORT when asked)."""
    host, port = (cfg.admin_host, cfg.admin_port) if admin else (cfg.host, cfg.port)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuseport:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(1024)
        sock.set_inheritable(True)
    except BaseException:
        sock.close()
        raise
    return sock


class Arbiter:
    """The supervisor's loop and the services child kinds use (spawn, send, listener, halt).

    All state here is touched only by the main thread's loop; signal handlers
    touch nothing but ``_signals`` (a deque, append is atomic) and the pipe.
    """

    def __init__(self, cfg, arena, first_socket: socket.socket, admin_socket: socket.socket,
                 argv: list[str] | None = None, started=None) -> None:
        self.cfg = cfg
        #: What SIGHUP parses again (None: sys.argv), and the config as first parsed from it.
        self.argv = argv
        self.started = started if started is not None else copy.deepcopy(cfg)
        #: True once a SIGUSR1 stop began: the arena is left for a warm restart.
        self.warm = False
        self.arena = arena
        self.pid = os.getpid()
        self.workers = Workers(cfg.workers)
        self.kinds: list[ChildKind] = [self.workers] + ([Registrar()] if cfg.etcd else [])
        self.children: dict[int, Child] = {}  # pid -> Child
        #: True once the stop began: kinds then only do their bookkeeping for a reaped child.
        self.stopping = False
        # slot index -> (data, admin) listening sockets; one shared pair unless reuseport.
        self._sockets: dict[int, tuple[socket.socket, socket.socket]] = {0: (first_socket, admin_socket)}
        self._halt: str | None = None
        self._signals: collections.deque[int] = collections.deque(maxlen=16)
        self._pipe_r, self._pipe_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        # Every child at once: the workers, the registrar, the workers retiring.
        self.pulses = Pulses(cfg.process_rows + 1)
        #: The host's log of recent writes, shared by every worker (made before any fork).
        self.write_log = WriteLog()
        self._timeout = cfg.worker_timeout
        #: In a forked child: its heartbeat (None in the arbiter, or without a free cell).
        self.child_pulse: Pulse | None = None
        #: systemd's notify socket (Type=notify): READY=1 once the workers serve, WATCHDOG=1.
        self.notifier = Notifier.from_environ()

    # -- services for the child kinds ---------------------------------------------

    def children_of(self, kind: ChildKind) -> list[Child]:
        """The live children of *kind*."""
        return [c for c in self.children.values() if c.kind is kind]

    def listener(self, slot: int) -> tuple[socket.socket, socket.socket]:
        """The (data, admin) sockets worker *slot* serves on: the shared pair, or its own with reuseport."""
        if not self.cfg.reuseport:
            return self._sockets[0]
        pair = self._sockets.get(slot)
        if pair is None:
            data = bind(self.cfg, reuseport=True)
            try:
                pair = self._sockets[slot] = (data, bind(self.cfg, reuseport=True, admin=True))
            except BaseException:
                data.close()
                raise
        return pair

    def drop_listener(self, slot: int) -> None:
        """Close retired *slot*'s own sockets (reuseport), so the kernel stops routing to them."""
        if self.cfg.reuseport:
            for sock in self._sockets.pop(slot):
                sock.close()

    def halt(self, reason: str) -> None:
        """Stop the host at the end of this turn with EXIT_BOOT_FAILED, logging *reason*."""
        self._halt = reason

    @staticmethod
    def send(pid: int, sig: int) -> None:
        """Signal *pid*, which may already be gone."""
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass

    def spawn(self, kind: ChildKind, slot: int | None) -> None:
        """Fork a child of *kind* (in *slot*) that runs ``kind.body`` and never returns here."""
        keep = kind.listener(self, slot)
        # Signals stay blocked across the fork: a SIGTERM that reached the child
        # before it dropped our handlers would run them in the child, land in
        # its copy of the queue, and be lost (measured: a retired worker that
        # never left).  Blocked, it waits for the child's own handlers.
        cell = self.pulses.take()
        if cell is None:  # cannot happen while process_rows bounds the children; never fatal
            log.error("no free heartbeat cell: %s %s runs without a watchdog", kind.name, slot)
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, ARBITER_SIGNALS)
        try:
            pid = os.fork()
        except BaseException:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            self.pulses.give_back(cell)
            raise
        if pid:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            child = self.children[pid] = Child(kind, pid, slot, cell)
            log.info("started %s (pid %d)", child.label, pid)
            return
        code = 1
        try:
            reset_child_signals(mask)
            os.close(self._pipe_r)
            # The write end stays: the child's first heartbeat wakes the loop through it.
            self.child_pulse = self.pulses.pulse(cell, self._pipe_w, beat_interval(self._timeout),
                                                 slot if kind is self.workers else None)
            for pair in self._sockets.values():
                if pair is not keep:
                    for sock in pair:
                        sock.close()  # a retired reuseport socket must die with its slot
            die_with_parent(self.pid)
            kind.body(self, slot, keep)
        except BaseException:
            log.exception("%s child failed", kind.name)
        finally:
            os._exit(code)

    # -- signals ---------------------------------------------------------------------

    def _on_signal(self, signum: int, frame) -> None:
        if signum != signal.SIGCHLD:
            self._signals.append(signum)
        try:
            os.write(self._pipe_w, b".")
        except OSError:
            pass  # pipe full: the loop is awake anyway

    def handle_term(self) -> int:
        """Graceful stop: in-flight requests get graceful_timeout."""
        log.info("SIGTERM: stopping")
        self._stop(graceful=True)
        return 0

    def handle_int(self) -> int:
        """Ctrl-C: as SIGTERM (a second one hurries)."""
        log.info("SIGINT: stopping")
        self._stop(graceful=True)
        return 0

    def handle_quit(self) -> int:
        """Quick stop: children get KILL_MARGIN, not the grace."""
        log.info("SIGQUIT: stopping")
        self._stop(graceful=False)
        return 0

    def handle_ttin(self) -> None:
        """One worker more."""
        self.workers.grow(self)

    def handle_ttou(self) -> None:
        """One worker fewer."""
        self.workers.shrink()

    def handle_hup(self) -> None:
        """Read the configuration again and roll the workers onto it (``reload``)."""
        cfg = reload.reread(self.argv, os.environ, self.cfg, self.started)
        if cfg is None:
            return
        logs.configure(cfg.log_level, cfg.log_format)  # workers forked from now on inherit it
        self._timeout = cfg.worker_timeout
        self.workers.roll(self, cfg)

    def handle_usr1(self) -> int:
        """Warm restart: a graceful stop that leaves the arena (and the etcd lease) behind."""
        log.info("SIGUSR1: stopping for a warm restart; arena %s stays for the next start", self.arena.name)
        self.warm = True
        self._stop(graceful=True)
        return 0

    def _sleep(self, timeout: float) -> None:
        try:
            ready, _, _ = select.select([self._pipe_r], [], [], timeout)
            if ready:
                while os.read(self._pipe_r, 512):
                    pass
        except (BlockingIOError, InterruptedError):
            pass

    # -- the loop --------------------------------------------------------------------

    def reap(self) -> None:
        """Collect every child that exited and hand it to its kind."""
        for pid in list(self.children):
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done, status = pid, 0
            if done:
                child = self.children.pop(pid)
                # A child that beat once and died before this turn saw it was ready all the same.
                child.ready = child.ready or self.pulses.last(child.cell) != 0
                self.pulses.give_back(child.cell)
                child.kind.exited(self, child, status)

    def watch(self) -> None:
        """Notice children becoming ready; abort, then kill, the ones whose heartbeat stopped."""
        now_ns = time.monotonic_ns()
        now = time.monotonic()
        for child in list(self.children.values()):
            last = self.pulses.last(child.cell)
            if last and not child.ready:
                child.ready = True
                child.kind.became_ready(self, child)
                self._notify_ready()
            if not self._timeout or child.cell is None:
                continue
            if child.aborted:
                if now - child.aborted >= ABORT_GRACE:
                    log.error("%s (pid %d) still there %.1fs after SIGABRT; sending SIGKILL",
                              child.label, child.pid, now - child.aborted)
                    self.send(child.pid, signal.SIGKILL)
                    child.aborted = float("inf")  # once; the reap follows
                continue
            silent = (now_ns - last) / 1e9 if last else now - child.started
            if silent >= self._timeout:
                why = (f"sent no heartbeat for {silent:.1f}s" if last
                       else f"not ready {silent:.1f}s after its start")
                log.error("%s (pid %d) %s (worker_timeout %gs): its event loop is stuck; sending "
                          "SIGABRT and replacing it", child.label, child.pid, why, self._timeout)
                self.send(child.pid, signal.SIGABRT)
                child.aborted = now

    def _notify_ready(self) -> None:
        """READY=1 to systemd once as many workers serve as the config asks for."""
        ready = sum(1 for c in self.children_of(self.workers) if c.ready)
        if ready >= self.workers.target:
            addr = self._sockets[0][0].getsockname() if self._sockets else ("?", self.cfg.port)
            self.notifier.ready(f"serving on {addr[0]}:{addr[1]} with {ready} workers")

    def _next_wake(self) -> float:
        """Seconds until the loop must turn again: TICK, sooner for a short timeout or a backoff."""
        wait = TICK if not self._timeout else min(TICK, beat_interval(self._timeout))
        now = time.monotonic()
        for kind in self.kinds:
            if kind.due > now:
                wait = min(wait, kind.due - now)
        return max(min(wait, self.notifier.next_beat_in), 0.01)

    def manage(self) -> None:
        """Bring every kind's children in line (unless the host is halting)."""
        if not self._halt:
            for kind in self.kinds:
                kind.manage(self)

    def run(self) -> int:
        """Run until a stop signal or a halt; return the process exit status."""
        for sig in ARBITER_SIGNALS:
            signal.signal(sig, self._on_signal)
        addr, admin = (sock.getsockname() for sock in self._sockets[0])
        log.info("supervisor %d listening on http://%s:%d (admin http://%s:%d) with %d workers%s; arena %s",
                 self.pid, addr[0], addr[1], admin[0], admin[1], self.workers.target,
                 " (SO_REUSEPORT)" if self.cfg.reuseport else "", self.arena.name)
        try:
            self.manage()
            while True:
                self.notifier.beat()
                self._sleep(self._next_wake())
                self.reap()
                if not self._halt:
                    self.watch()
                while self._signals:
                    name = signal.Signals(self._signals.popleft()).name
                    code = getattr(self, "handle_" + name[3:].lower())()
                    if code is not None:
                        return code
                if self._halt:
                    log.error("%s", self._halt)
                    self._stop(graceful=False)
                    return EXIT_BOOT_FAILED
                self.manage()
        except BaseException:
            self._stop(graceful=False)
            raise

    def _stop(self, graceful: bool) -> None:
        """Stop accepting, stop every child (gracefully when asked), reap them all."""
        self.stopping = True
        self.notifier.stopping()
        for pair in self._sockets.values():
            for sock in pair:
                sock.close()
        self._sockets.clear()
        for pid, child in self.children.items():
            self.send(pid, child.kind.warm_stop_signal if self.warm else signal.SIGTERM)
        grace = self.cfg.graceful_timeout + KILL_MARGIN if graceful else KILL_MARGIN
        deadline = time.monotonic() + grace
        while self.children and time.monotonic() < deadline:
            self._sleep(0.05)
            self.reap()
            if any(s in (signal.SIGINT, signal.SIGQUIT) for s in self._signals):
                break  # a second Ctrl-C: no more waiting
        for pid in list(self.children):
            log.warning("pid %d did not stop in time; killing it", pid)
            self.send(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5.0
        while self.children and time.monotonic() < deadline:
            self.reap()
            time.sleep(0.01)
        log.info("supervisor %d stopped", self.pid)
