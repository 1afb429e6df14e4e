#!/usr/bin/env python3
"""GeeCache host supervisor: one arena, one port, N forked workers.

    python supervisor.py [--config FILE] [--workers N] [--host 127.0.0.1] [--port 8001]
                         [--arena 256MiB] [--data-dir DIR] [--auth-token T] [--etcd URL,...] ...

With no config it serves the demo group ``scores`` from ``<data dir>/demo.db``
(created and seeded on first run), so ``curl 'http://127.0.0.1:8001/api?key=Tom'``
prints ``630``.  The data dir is ``--data-dir``, else ``data_dir`` in the config,
else ``$XDG_DATA_HOME/geecache``, else ``./geecache-data``.

Modelled on gunicorn's arbiter: signal handlers only enqueue the signal and
wake the loop through a self-pipe; one loop waits, reaps, and manages.

- SIGCHLD: reap; a dead worker is respawned on the next turn (well under 1 s);
  the arena and its cached data survive it.
- A worker that exits with WORKER_BOOT_ERROR (3), or workers that die within
  BOOT_WINDOW of starting MAX_BOOT_FAILURES times in a row, stop the host
  with a message instead of a restart storm (exit status 3).
- SIGTERM/SIGINT: close the listener, SIGTERM the workers (they finish
  in-flight requests within ``graceful_timeout``), SIGKILL stragglers, unlink
  the shared memory and the metrics directory, exit 0.  A second one hurries.
- SIGTTIN/SIGTTOU: one worker more/fewer (never fewer than one).
- With ``--etcd``, a registrar child holds the host's etcd session and
  writes the member list into the arena; it is respawned like a worker,
  with backoff.  The supervisor itself never imports grpc (a gRPC client in
  a process that forks breaks its children), only the child does.

Exit status: 0 clean stop, 1 runtime failure (e.g. the port is taken),
2 invalid configuration (before anything forks), 3 workers failed to boot.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import select
import signal
import socket
import sys
import time

# The repo root on sys.path when run as a script from elsewhere.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from geecache import leftovers, metrics  # noqa: E402
from geecache.config import DEMO_ROWS, Config, parse_args  # noqa: E402
from geecache.errors import ConfigError  # noqa: E402
from workers.worker import STOP_SIGNALS, WORKER_BOOT_ERROR, die_with_parent, worker_main  # noqa: E402

log = logging.getLogger("geecache.supervisor")

#: A worker dying sooner than this after its fork counts as a boot failure.
BOOT_WINDOW = 2.0
#: This many boot failures in a row (no worker surviving BOOT_WINDOW between them) halt the host.
MAX_BOOT_FAILURES = 5
#: The loop wakes at least this often even without signals.
TICK = 1.0
#: Registrar respawn backoff: first delay, cap (seconds); reset after it ran REGISTRAR_STABLE.
REGISTRAR_BACKOFF = (0.5, 30.0)
REGISTRAR_STABLE = 60.0
#: Extra time after graceful_timeout before stragglers get SIGKILL.
KILL_MARGIN = 2.0
EXIT_BOOT_FAILED = 3

_HANDLED = (signal.SIGCHLD, *STOP_SIGNALS, signal.SIGTTIN, signal.SIGTTOU, signal.SIGHUP)


class Child:
    """A forked process the supervisor owns: a worker (in a slot) or the registrar."""

    __slots__ = ("kind", "pid", "slot", "started")

    def __init__(self, kind: str, pid: int, slot: int | None) -> None:
        self.kind = kind
        self.pid = pid
        self.slot = slot
        self.started = time.monotonic()


def describe_status(status: int) -> str:
    """``exit status 1`` / ``killed by SIGKILL``: for log lines."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            return f"killed by {signal.Signals(sig).name}"
        except ValueError:
            return f"killed by signal {sig}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"


def bind(cfg: Config, reuseport: bool) -> socket.socket:
    """A listening TCP socket on cfg.host:cfg.port (SO_REUSEPORT when asked)."""
    family = socket.AF_INET6 if ":" in cfg.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuseport:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((cfg.host, cfg.port))
        sock.listen(1024)
        sock.set_inheritable(True)
    except BaseException:
        sock.close()
        raise
    return sock


class Supervisor:
    """The arbiter: owns the listening socket(s), the arena and every child.

    All state here is touched only by the main thread's loop; signal handlers
    touch nothing but ``_signals`` (a deque, append is atomic) and the pipe.
    """

    def __init__(self, cfg: Config, arena, first_socket: socket.socket) -> None:
        self.cfg = cfg
        self.arena = arena
        self.pid = os.getpid()
        self._reuseport = cfg.reuseport
        # slot index -> listening socket; one shared socket unless reuseport.
        self._sockets: dict[int, socket.socket] = {0: first_socket}
        self._target = cfg.workers
        self._children: dict[int, Child] = {}  # pid -> Child
        self._retiring: dict[int, float] = {}  # pid told to stop by SIGTTOU -> when to SIGKILL it
        self._boot_failures = 0
        self._registrar_failures = 0
        self._registrar_due = 0.0              # monotonic time the registrar may be respawned
        self._halt: str | None = None
        self._signals: collections.deque[int] = collections.deque(maxlen=16)
        self._pipe_r, self._pipe_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    # -- signals ---------------------------------------------------------------

    def _on_signal(self, signum: int, frame) -> None:
        if signum != signal.SIGCHLD:
            self._signals.append(signum)
        try:
            os.write(self._pipe_w, b".")
        except OSError:
            pass  # pipe full: the loop is awake anyway

    def _install_signals(self) -> None:
        for sig in _HANDLED:
            signal.signal(sig, self._on_signal)

    def _sleep(self, timeout: float) -> None:
        try:
            ready, _, _ = select.select([self._pipe_r], [], [], timeout)
            if ready:
                while os.read(self._pipe_r, 512):
                    pass
        except BlockingIOError:
            pass
        except InterruptedError:
            pass

    # -- children --------------------------------------------------------------

    def _socket_for(self, slot: int) -> socket.socket:
        if not self._reuseport:
            return self._sockets[0]
        sock = self._sockets.get(slot)
        if sock is None:
            sock = self._sockets[slot] = bind(self.cfg, reuseport=True)
        return sock

    def _fork(self, kind: str, slot: int | None, body) -> None:
        keep = self._socket_for(slot) if kind == "worker" else None
        # Signals stay blocked across the fork: a SIGTERM that reached the child
        # before it dropped our handlers would run them in the child, land in
        # its copy of the queue, and be lost (measured: a retired worker that
        # never left).  Blocked, it waits for the child's own handlers.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, _HANDLED)
        pid = os.fork()
        if pid:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            self._children[pid] = Child(kind, pid, slot)
            log.info("started %s%s (pid %d)", kind, f" {slot}" if slot is not None else "", pid)
            return
        # Child: never return into the supervisor's loop.
        code = 1
        try:
            for sig in _HANDLED:
                signal.signal(sig, signal.SIG_DFL)
            # Stop signals stay blocked: each child's body unblocks them once it can handle them.
            signal.pthread_sigmask(signal.SIG_SETMASK, set(mask) | set(STOP_SIGNALS))
            os.close(self._pipe_r)
            os.close(self._pipe_w)
            for sock in self._sockets.values():
                if sock is not keep:
                    sock.close()  # a retired reuseport socket must die with its slot
            body(keep)
        except BaseException:
            log.exception("%s child failed", kind)
        finally:
            os._exit(code)

    def _worker_body(self, sock: socket.socket) -> None:
        worker_main(self.cfg, sock, self.arena, self.pid)

    def _registrar_body(self, _sock) -> None:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for sig in (signal.SIGTTIN, signal.SIGTTOU):
            signal.signal(sig, signal.SIG_IGN)
        die_with_parent(self.pid)
        # Imported here only: grpc must never be loaded in the forking supervisor.
        from geecache.registry import registrar_main

        code = registrar_main(self.cfg.etcd, self.cfg.advertise, self.cfg.lease_ttl, self.arena.write_ring)
        os._exit(code)

    def _workers(self) -> list[Child]:
        return [c for c in self._children.values() if c.kind == "worker" and c.pid not in self._retiring]

    def _reap(self) -> None:
        for pid in list(self._children):
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done, status = pid, 0
            if done:
                self._on_exit(self._children.pop(pid), status)

    def _on_exit(self, child: Child, status: int) -> None:
        lived = time.monotonic() - child.started
        how = describe_status(status)
        if child.kind == "registrar":
            self._on_registrar_exit(child, how, lived)
            return
        metrics.mark_process_dead(child.pid)
        if child.pid in self._retiring:
            del self._retiring[child.pid]
            log.info("worker %d (pid %d) retired: %s", child.slot, child.pid, how)
            return
        log.warning("worker %d (pid %d) died after %.1fs: %s", child.slot, child.pid, lived, how)
        if os.WIFEXITED(status) and os.WEXITSTATUS(status) == WORKER_BOOT_ERROR:
            self._halt = (f"worker {child.slot} failed to boot ({how}; its error is logged above); "
                          "stopping instead of restarting it")
        elif lived < BOOT_WINDOW:
            self._boot_failures += 1
            if self._boot_failures >= MAX_BOOT_FAILURES:
                self._halt = (f"workers died within {BOOT_WINDOW:g}s of starting "
                              f"{self._boot_failures} times in a row (last: {how}); "
                              "stopping instead of restarting them")
        else:
            self._boot_failures = 0

    def _on_registrar_exit(self, child: Child, how: str, lived: float) -> None:
        if lived >= REGISTRAR_STABLE:
            self._registrar_failures = 0
        delay = min(REGISTRAR_BACKOFF[0] * 2 ** self._registrar_failures, REGISTRAR_BACKOFF[1])
        self._registrar_failures += 1
        self._registrar_due = time.monotonic() + delay
        log.warning("registrar (pid %d) exited: %s; respawning in %.1fs", child.pid, how, delay)

    def _manage(self) -> None:
        """Bring the children in line with the target: spawn missing, retire extra."""
        if self._halt:
            return
        workers = self._workers()
        # A worker that has outlived the boot window proves the host can boot.
        if any(time.monotonic() - w.started >= BOOT_WINDOW for w in workers):
            self._boot_failures = 0
        used = {w.slot for w in workers}
        for slot in range(self._target):
            if slot not in used:
                self._fork("worker", slot, self._worker_body)
        for w in workers:
            if w.slot >= self._target:
                log.info("retiring worker %d (pid %d)", w.slot, w.pid)
                self._retiring[w.pid] = time.monotonic() + self.cfg.graceful_timeout + KILL_MARGIN
                self._signal(w.pid, signal.SIGTERM)
                if self._reuseport:
                    self._sockets.pop(w.slot).close()
        for pid, deadline in self._retiring.items():
            if time.monotonic() >= deadline:
                log.warning("retired worker (pid %d) did not stop in time; killing it", pid)
                self._signal(pid, signal.SIGKILL)
        if self.cfg.etcd and time.monotonic() >= self._registrar_due:
            if not any(c.kind == "registrar" for c in self._children.values()):
                self._fork("registrar", None, self._registrar_body)

    @staticmethod
    def _signal(pid: int, sig: int) -> None:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass

    # -- the loop --------------------------------------------------------------

    def run(self) -> int:
        """Run until a stop signal or a halt; return the process exit status."""
        self._install_signals()
        addr = self._sockets[0].getsockname()
        log.info("supervisor %d listening on http://%s:%d with %d workers%s; arena %s", self.pid,
                 addr[0], addr[1], self._target, " (SO_REUSEPORT)" if self._reuseport else "",
                 self.arena.name)
        try:
            self._manage()
            while True:
                self._sleep(TICK)
                self._reap()
                while self._signals:
                    sig = self._signals.popleft()
                    if sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
                        log.info("%s: stopping", signal.Signals(sig).name)
                        self._stop(graceful=sig != signal.SIGQUIT)
                        return 0
                    if sig == signal.SIGTTIN:
                        self._target += 1
                        log.info("SIGTTIN: worker count now %d", self._target)
                    elif sig == signal.SIGTTOU:
                        self._target = max(1, self._target - 1)
                        log.info("SIGTTOU: worker count now %d", self._target)
                    elif sig == signal.SIGHUP:
                        log.info("SIGHUP ignored: restart the host to change its configuration")
                if self._halt:
                    log.error("%s", self._halt)
                    self._stop(graceful=False)
                    return EXIT_BOOT_FAILED
                self._manage()
        except BaseException:
            self._stop(graceful=False)
            raise

    def _stop(self, graceful: bool) -> None:
        """Stop accepting, stop every child (gracefully when asked), reap them all."""
        for sock in self._sockets.values():
            sock.close()
        self._sockets.clear()
        for pid in self._children:
            self._signal(pid, signal.SIGTERM)
        grace = self.cfg.graceful_timeout + KILL_MARGIN if graceful else KILL_MARGIN
        deadline = time.monotonic() + grace
        while self._children and time.monotonic() < deadline:
            self._sleep(0.05)
            self._reap_quietly()
            if any(s in (signal.SIGINT, signal.SIGQUIT) for s in self._signals):
                break  # a second Ctrl-C: no more waiting
        for pid in list(self._children):
            log.warning("pid %d did not stop in time; killing it", pid)
            self._signal(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5.0
        while self._children and time.monotonic() < deadline:
            self._reap_quietly()
            time.sleep(0.01)
        log.info("supervisor %d stopped", self.pid)

    def _reap_quietly(self) -> None:
        for pid in list(self._children):
            try:
                done, _status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid
            if done:
                child = self._children.pop(pid)
                if child.kind == "worker":
                    metrics.mark_process_dead(pid)


def seed_demo(path: str) -> None:
    """Create the demo database with the classic rows, if it does not exist yet."""
    if os.path.exists(path):
        return
    from geecache.storage import SQLiteStorage

    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    store = SQLiteStorage(path)

    async def fill() -> None:
        for key, value in DEMO_ROWS.items():
            await store.set(key, value)

    try:
        asyncio.run(fill())
    finally:
        store.close()
    log.info("created the demo database %s", path)


def configure_arena(cfg: Config, arena) -> None:
    """Declare every group in the arena before forking, so a budget that does not fit
    is a config error now rather than a boot failure in every worker."""
    from geecache.group import Group

    for i, g in enumerate(cfg.groups):
        try:
            Group(g.name, None, max_bytes=g.max_bytes, policy=g.policy, ttl=g.ttl, codec=g.codec,
                  cache=arena, flight=arena, item_limit=g.item_limit)
        except ConfigError as exc:
            raise ConfigError(f"groups[{i}].{exc.field}", exc.reason) from None


def create_arena(cfg: Config):
    """The host's shared-memory arena, sized once."""
    from geecache.shm import Arena

    check_shm_space(cfg.arena)
    try:
        # Every group takes two records: itself and its hot partition.
        return Arena.create(cfg.arena, item_limit=cfg.item_limit, max_groups=max(32, 2 * len(cfg.groups)))
    except ConfigError as exc:
        raise ConfigError("arena", exc.reason) from None


def check_shm_space(size: int, shm_dir: str = "/dev/shm") -> None:
    """Refuse an arena larger than the free space of /dev/shm.

    The segment is only ftruncated, so a tmpfs too small for it (Docker's
    default --shm-size is 64 MiB) would otherwise fail later, as SIGBUS in a
    worker when the cache fills.
    """
    try:
        st = os.statvfs(shm_dir)
    except OSError:
        return  # no /dev/shm to ask: shm_open will say what is wrong
    free = st.f_bavail * st.f_frsize
    if size > free:
        raise ConfigError("arena", f"{size} bytes do not fit in {shm_dir} ({free} bytes free); "
                                   "lower --arena or enlarge the tmpfs (docker: --shm-size)")


def main(argv: list[str] | None = None) -> int:
    """Parse, validate, set up, supervise; return the exit status."""
    logging.basicConfig(
        level=os.environ.get("GEECACHE_LOG_LEVEL", "INFO").upper(), stream=sys.stderr,
        format="%(asctime)s [%(process)d] %(name)s %(levelname)s: %(message)s")
    try:
        cfg = parse_args(argv)
        for g in cfg.groups:
            if g.demo:
                seed_demo(g.sqlite)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: cannot create the demo database: {exc}", file=sys.stderr)
        return 2
    try:
        sock = bind(cfg, cfg.reuseport)
    except OSError as exc:
        print(f"error: cannot listen on {cfg.host}:{cfg.port}: {exc.strerror}", file=sys.stderr)
        return 1
    if cfg.port == 0:
        cfg.port = sock.getsockname()[1]
    if cfg.etcd and not cfg.advertise:
        if cfg.host in ("0.0.0.0", "::", ""):
            sock.close()
            print(f"config error: advertise: --host {cfg.host or '*'} is no address other hosts can reach; "
                  "give --advertise HOST:PORT", file=sys.stderr)
            return 2
        cfg.advertise = f"{cfg.host}:{cfg.port}"
    state = leftovers.state_path(cfg.data_dir, cfg.port)
    leftovers.reclaim(state)
    metrics_dir, created = metrics.prepare_multiproc_dir()
    log.info("metrics directory %s", metrics_dir)
    arena = None
    try:
        arena = create_arena(cfg)
        leftovers.record(state, arena.name, metrics_dir if created else None)
        configure_arena(cfg, arena)
        if cfg.etcd:
            # Alone until the registrar says otherwise: the ring is usable from the first request.
            arena.write_ring([cfg.advertise])
        return Supervisor(cfg, arena, sock).run()
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    finally:
        sock.close()
        if arena is not None:
            arena.close()
            arena.unlink()
        metrics.remove_multiproc_dir(metrics_dir, created)
        leftovers.forget(state)


if __name__ == "__main__":
    sys.exit(main())
