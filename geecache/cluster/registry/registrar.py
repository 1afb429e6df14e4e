"""The registrar: the host's one etcd session, and what it tells the ring.

It registers `REGISTRY_PREFIX + advertise` under a lease it keeps alive,
watches the prefix, and hands the sorted member list to `on_members` on every
change. It runs in its own child process of the supervisor: a gRPC client must
never be alive in a process that forks (measured: forked children hang), so
aetcd/grpc are imported only inside `run_registrar`, after the fork; importing
this module is safe in the supervisor.

Fault policy, in one place:
- this host is always in its own list (alone, a host owns every key);
- `[advertise]` is published at once, so the ring is usable before etcd answers;
- etcd lost: keep the last list (an outage is not a membership change), log one
  line per outage, retry with capped, jittered exponential backoff, rotating
  through the endpoints; on return: reuse the lease if etcd still has it, else
  grant a new one, put the key again, re-read the prefix, re-watch;
- a keepalive that answers TTL<=0 (lease expired) or a watch that breaks ends
  the session the same way, so recovery has one code path;
- stop: revoke the lease (bounded, errors ignored) so peers drop the host at
  once instead of after the TTL, then close the client.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
import threading
from typing import TYPE_CHECKING, Callable, Sequence

from geecache.errors import ConfigError
from geecache.signals import STOP_SIGNALS as _STOP_SIGNALS
from geecache.cluster.registry.config import (
    REGISTRY_PREFIX,
    parse_endpoints,
    registry_key,
    validate_advertise,
)

if TYPE_CHECKING:
    import aetcd  # for its names only: at run time it is imported after the fork (_Registrar)

_log = logging.getLogger("geecache.cluster.registry")

#: First retry delay after a failed session; doubles per failure up to the cap.
BACKOFF_INITIAL = 0.2
#: Retry delay cap: how long a recovered etcd may wait for this host, at most.
BACKOFF_MAX = 2.0
#: Bound on the revoke at shutdown; past it the lease simply expires.
REVOKE_TIMEOUT = 2.0
#: Bound on closing the client (the watch stream and channel teardown).
CLOSE_TIMEOUT = 2.0

# Each session builds a new channel. With grpc's default global subchannel
# pool a new channel may share the old one's subchannel and its reconnect
# backoff (up to 120 s by default); a local pool and a short backoff rule that
# out. Measured here: re-registration after an etcd restart took ~0.1 s with
# and without these options, so they are a guard, not a measured speed-up.
_GRPC_OPTIONS = {
    "grpc.use_local_subchannel_pool": 1,
    "grpc.initial_reconnect_backoff_ms": 100,
    "grpc.min_reconnect_backoff_ms": 100,
    "grpc.max_reconnect_backoff_ms": 1000,
}


def call_timeout_for(lease_ttl: float) -> float:
    """The bound on one etcd call: a third of the TTL, kept within [0.5, 3] s.

    A third leaves a failed keepalive time to be retried before the lease
    lapses; the floor keeps a loaded loopback etcd from looking dead.
    """
    return max(0.5, min(3.0, lease_ttl / 3))


class _CallbackFailed(Exception):
    """on_members raised: a bug in the caller, not an etcd fault; not retried."""


class _SessionEnded(Exception):
    """The session must be rebuilt: lease lost or watch stream ended."""


class _Registrar:
    """State of one registrar run; touched only by its own event loop task."""

    def __init__(self, endpoints: list[tuple[str, int]], advertise: str, lease_ttl: int,
                 on_members: Callable[[list[str]], None], stop: asyncio.Event, log: logging.Logger,
                 prefix: str, keep_lease: asyncio.Event | None = None, seeded: bool = False) -> None:
        import aetcd  # grpc is loaded here, after the fork, never at module import

        self._aetcd = aetcd
        self._endpoints = endpoints
        self._endpoint_index = 0
        self._advertise = advertise
        self._ttl = lease_ttl
        self._on_members = on_members
        self._stop = stop
        #: Set (with stop) for a warm restart: the lease is left to expire, not revoked.
        self._keep_lease = keep_lease
        #: The caller already holds ``[advertise]`` (the supervisor seeds the arena's ring with
        #: it): the first list reported is then the one read from etcd, so a change of the
        #: arena's ring version means "etcd was read" (a warm restart waits for that).
        self._seeded = seeded
        self._log = log
        self._prefix = prefix.encode()
        self._key = registry_key(advertise, prefix).encode()
        self._timeout = call_timeout_for(lease_ttl)
        self._client: aetcd.Client | None = None
        self._lease_id: int | None = None
        self._granted_ttl = lease_ttl
        self._members: set[str] = set()  # as last read from etcd
        self._published: list[str] | None = None
        self._down = False  # inside an outage: its first line is logged, the rest are not
        self._live = False  # the current session got as far as watching

    # -- endpoints and calls -------------------------------------------------

    def _endpoint(self) -> str:
        host, port = self._endpoints[self._endpoint_index]
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def _new_client(self) -> aetcd.Client:
        host, port = self._endpoints[self._endpoint_index]
        return self._aetcd.Client(
            host=f"[{host}]" if ":" in host else host,
            port=port,
            timeout=self._timeout,
            options=dict(_GRPC_OPTIONS),
        )

    async def _call(self, awaitable):
        # aetcd passes `timeout` to grpc as a deadline, but some of its paths
        # (watch create, connect wait) have none; wait_for bounds them all.
        return await asyncio.wait_for(awaitable, self._timeout)

    # -- publishing -------------------------------------------------------------

    def _member_name(self, key: bytes) -> str | None:
        try:
            return validate_advertise(key[len(self._prefix):].decode("utf-8"))
        except (UnicodeDecodeError, ConfigError):
            self._log.debug("ignoring malformed registry key %r", key)
            return None

    def _publish(self) -> None:
        members = sorted(self._members | {self._advertise})
        if members == self._published:
            return
        before, self._published = self._published, members
        try:
            version = self._on_members(list(members))
        except Exception as e:
            raise _CallbackFailed(f"on_members({members}) raised {e!r}") from e
        # One line per change of the host's ring, so an operator sees a peer leave or join.
        added = sorted(set(members) - set(before or ()))
        removed = sorted(set(before or ()) - set(members))
        self._log.info("ring%s: %d member%s%s%s: %s", f" v{version}" if isinstance(version, int) else "",
                       len(members), "" if len(members) == 1 else "s", f", added {', '.join(added)}" if added else "",
                       f", removed {', '.join(removed)}" if removed else "", ", ".join(members))

    # -- one session: register, read, watch, keep alive -------------------------

    async def _register(self, client) -> None:
        if self._lease_id is not None:
            # etcd keeps leases across its own restart (and extends them), so
            # after a short outage the old lease may still hold our key.
            reply = await self._call(client.refresh_lease(self._lease_id))
            if reply is None or reply.TTL <= 0:
                self._lease_id = None
        if self._lease_id is None:
            lease = await self._call(client.lease(self._ttl))
            self._lease_id, self._granted_ttl = lease.id, lease.ttl
        await self._call(client.put(self._key, self._advertise.encode(), lease=self._lease_id))

    async def _keepalive(self, client) -> None:
        interval = max(0.2, self._granted_ttl / 3)
        while True:
            await asyncio.sleep(interval)
            reply = await self._call(client.refresh_lease(self._lease_id))
            if reply is None or reply.TTL <= 0:
                lost, self._lease_id = self._lease_id, None
                raise _SessionEnded(f"lease {lost:x} expired")

    async def _follow(self, client, watch) -> None:
        async for event in watch:
            name = self._member_name(event.kv.key)
            if name is None:
                continue
            if event.kind == "DELETE":
                self._members.discard(name)
                if name == self._advertise:
                    # Deleted by hand or by an expiry we have not seen yet:
                    # put it back; a dead lease makes this fail and the
                    # session is rebuilt with a new one.
                    await self._call(client.put(
                        self._key, self._advertise.encode(), lease=self._lease_id))
            else:
                self._members.add(name)
            self._publish()
        raise _SessionEnded("watch stream ended")

    async def _session(self, client) -> None:
        """Run until something fails; never returns normally."""
        await self._register(client)
        snapshot = await self._call(client.get_prefix(self._prefix, keys_only=True))
        self._members = {n for kv in snapshot if (n := self._member_name(kv.key))}
        # Start right after the snapshot's revision: no event is lost between
        # the read and the watch, and none is applied twice.
        watch = await self._call(client.watch_prefix(
            self._prefix, start_revision=snapshot.header.revision + 1))
        self._publish()
        self._live = True
        if self._down:
            self._log.warning("etcd reachable again at %s; registered %s, members %s",
                              self._endpoint(), self._advertise, self._published)
            self._down = False
        else:
            self._log.info("registered %s at %s (lease %x, ttl %ss)", self._advertise,
                           self._endpoint(), self._lease_id, self._granted_ttl)
        tasks = [asyncio.ensure_future(self._keepalive(client)),
                 asyncio.ensure_future(self._follow(client, watch))]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                t.result()  # raises the failure that ended the session
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        raise _SessionEnded("session tasks ended")

    # -- the loop ------------------------------------------------------------------

    def _note_failure(self, err: BaseException) -> None:
        reason = f"{type(err).__name__}: {err}".strip().rstrip(":")
        if self._down:
            self._log.debug("etcd still unreachable at %s (%s)", self._endpoint(), reason)
            return
        self._down = True
        if self._published in (None, [self._advertise]) and not self._members:
            self._log.warning("etcd unreachable at %s (%s); serving as a single host, "
                              "retrying every <=%ss", self._endpoint(), reason, BACKOFF_MAX)
        else:
            self._log.warning("lost etcd at %s (%s); keeping the last member list %s, "
                              "retrying every <=%ss", self._endpoint(), reason,
                              self._published, BACKOFF_MAX)

    async def _close_client(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        try:
            await asyncio.wait_for(client.close(), CLOSE_TIMEOUT)
        except Exception as e:
            self._log.debug("closing the etcd client failed: %r", e)

    async def _revoke(self) -> None:
        if self._lease_id is None:
            return
        if self._keep_lease is not None and self._keep_lease.is_set():
            self._log.info("leaving lease %x to expire within %ss (warm restart): %s stays registered",
                           self._lease_id, self._granted_ttl, self._advertise)
            self._lease_id = None
            return
        if self._client is None:
            self._client = self._new_client()
        try:
            await asyncio.wait_for(self._client.revoke_lease(self._lease_id), REVOKE_TIMEOUT)
            self._log.info("revoked lease %x; %s deregistered", self._lease_id, self._advertise)
        except Exception as e:
            self._log.warning("could not revoke lease %x (%r); it expires within %ss",
                              self._lease_id, e, self._granted_ttl)
        self._lease_id = None

    async def run(self) -> None:
        if not self._seeded:
            self._publish()
        delay = BACKOFF_INITIAL
        stopped = asyncio.ensure_future(self._stop.wait())
        try:
            while not self._stop.is_set():
                self._client = self._new_client()
                self._live = False
                session = asyncio.ensure_future(self._session(self._client))
                await asyncio.wait({session, stopped}, return_when=asyncio.FIRST_COMPLETED)
                if not session.done():
                    # Revoke first, while the session's channel is up: that is what
                    # peers see, and a loaded box was seen to spend the whole stop
                    # deadline cancelling the watch stream before reaching the revoke.
                    await self._revoke()
                    session.cancel()
                    await asyncio.wait({session}, timeout=CLOSE_TIMEOUT)
                    break
                err = session.exception()
                if isinstance(err, _CallbackFailed):
                    raise err
                if self._live:
                    delay = BACKOFF_INITIAL  # a fresh outage starts from short retries
                assert err is not None  # a session never returns normally (``_session``)
                self._note_failure(err)
                await self._close_client()
                # Try the next endpoint: the one that failed is the likeliest dead.
                self._endpoint_index = (self._endpoint_index + 1) % len(self._endpoints)
                await asyncio.wait({stopped}, timeout=delay * random.uniform(0.5, 1.0))
                delay = min(BACKOFF_MAX, delay * 2)
        finally:
            stopped.cancel()
            await self._revoke()
            await self._close_client()


async def run_registrar(
    endpoints: Sequence[str] | str,
    advertise: str,
    lease_ttl: int,
    on_members: Callable[[list[str]], None],
    stop: asyncio.Event,
    log: logging.Logger = _log,
    *,
    prefix: str = REGISTRY_PREFIX,
    keep_lease: asyncio.Event | None = None,
    seeded: bool = False,
) -> None:
    """Register this host in etcd and report the member list until `stop` is set.

    `keep_lease`, set before `stop`: leave the lease to expire instead of
    revoking it (a warm restart, whose successor registers again).

    `endpoints`: etcd client endpoints (see `parse_endpoints`), tried in turn.
    `advertise`: this host's address as peers reach it (`host:port` or a URL);
    the key is `prefix + advertise`, its value the same string.
    `on_members(sorted list of advertise addresses)` is called synchronously
    from the loop when the list changes, first with `[advertise]` at once (unless
    `seeded`: the caller holds that already, and the first call is the list
    read from etcd); it always contains `advertise`. An outage never shrinks it. If `on_members`
    raises, the registrar stops (revoking its lease) and the error propagates:
    a broken callback is a bug to surface, not a fault to retry.
    Raises ConfigError on bad endpoints, advertise or lease_ttl.
    """
    parsed = parse_endpoints(endpoints)
    validate_advertise(advertise)
    if isinstance(lease_ttl, bool) or not isinstance(lease_ttl, int) or lease_ttl < 1:
        raise ConfigError("lease_ttl", f"must be a positive integer of seconds, got {lease_ttl!r}")
    if not prefix.startswith("/") or not prefix.endswith("/"):
        raise ConfigError("prefix", f"must start and end with '/', got {prefix!r}")
    await _Registrar(parsed, advertise, lease_ttl, on_members, stop, log, prefix, keep_lease, seeded).run()


#: Once told to stop, the process exits by this deadline whatever grpc does:
#: the revoke and the close are bounded, but a channel teardown was seen to
#: hang the process past both (once in many CI runs).
STOP_DEADLINE = REVOKE_TIMEOUT + CLOSE_TIMEOUT + 2.0


def _exit_by_deadline(log: logging.Logger) -> None:
    """Arm a timer that ends the process if the stop has not finished by STOP_DEADLINE."""

    def expire() -> None:
        log.warning("registrar: stop took over %.0fs; exiting without waiting further", STOP_DEADLINE)
        os._exit(0)

    timer = threading.Timer(STOP_DEADLINE, expire)
    timer.daemon = True
    timer.start()


def registrar_main(
    endpoints: Sequence[str] | str,
    advertise: str,
    lease_ttl: int,
    on_members: Callable[[list[str]], None],
    *,
    prefix: str = REGISTRY_PREFIX,
    log: logging.Logger = _log,
    pulse=None,
    seeded: bool = False,
) -> int:
    """Entry point of the registrar child process; returns its exit code.

    *pulse* (``geecache.host.pulse.Pulse``): stamped from the loop for the
    supervisor's watchdog.

    The supervisor calls it in a freshly forked child and then `os._exit(code)`.
    SIGTERM, SIGINT and SIGQUIT set the stop event (the handlers do nothing
    else), so a stop always revokes the lease; SIGUSR1 (the supervisor's warm
    restart) stops it leaving the lease to expire. Exit codes: 0 clean stop,
    2 bad configuration, 1 anything else (the supervisor respawns it).
    """
    # Signals are held until the loop's handlers exist: a SIGTERM in between
    # would otherwise kill us with the default action and skip the revoke.
    signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    # The fork copied the supervisor's wakeup fd: without this, a signal sent
    # to this child would be written into the supervisor's self-pipe.
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # nothing to reload here

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        def request_stop() -> None:
            if not stop.is_set():
                stop.set()
                _exit_by_deadline(log)

        for sig in _STOP_SIGNALS:
            loop.add_signal_handler(sig, request_stop)
        keep_lease = asyncio.Event()

        def request_warm_stop() -> None:
            keep_lease.set()
            request_stop()

        loop.add_signal_handler(signal.SIGUSR1, request_warm_stop)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
        if pulse is not None:
            pulse.start(loop)
        await run_registrar(endpoints, advertise, lease_ttl, on_members, stop, log,
                            prefix=prefix, keep_lease=keep_lease, seeded=seeded)

    try:
        asyncio.run(main())
    except ConfigError as e:
        log.error("registrar: bad configuration: %s", e)
        return 2
    except Exception:
        log.exception("registrar failed")
        return 1
    return 0
