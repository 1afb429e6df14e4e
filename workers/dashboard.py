"""The host as the dashboard and the scrape see it: ring, groups, children, processes.

``HostView`` gathers, on demand, what ``GET /dashboard.json`` answers and
``geecache.observability.metrics.HostCollector`` exports; ``GET /`` serves the page
(``dashboard.html``, package data: one file, inline CSS and JS, nothing
fetched from elsewhere) that polls the JSON every second.

Rates (gets/s, loads/s, peer errors/s, the recent hit rate) are computed by
the page from two successive snapshots, not kept on the server: the
counters are host-wide sums in shared memory, so whichever worker answers a
poll gives the same monotonic totals and the difference of two polls is
exact; a server-side window would need a sampler per worker (each poll can
reach another worker) running even when nobody watches.  The page keeps
the previous snapshot; the server keeps nothing.
"""

from __future__ import annotations

import asyncio
import os
import platform
import time
from importlib import resources
from typing import TYPE_CHECKING, Callable

from geecache import __version__
from geecache.observability import metrics, procstat
from geecache.cluster.consistenthash import members_digest
from geecache.errors import PeerError

if TYPE_CHECKING:
    from geecache.cluster.pool import HTTPPool
    from geecache.group import Group
    from geecache.host.pulse import Pulse

#: Seconds the cluster overview waits for one peer's figures (they are asked all at once).
OVERVIEW_TIMEOUT = 2.0


class HostView:
    """Reads the host's state for one answer; holds nothing that goes stale.

    *pulse* is this worker's ``geecache.host.pulse.Pulse`` (None outside a
    supervisor: only this process is listed); *pool* the peer pool (None
    without peers); *group_stats* answers a group's host-wide document
    (``workers.app.host_stats``).
    """

    def __init__(self, groups: dict[str, Group], group_stats: Callable[[str], dict], *,
                 pulse: Pulse | None = None, pool: HTTPPool | None = None, workers_configured: int = 1,
                 supervisor_pid: int | None = None, arena_bytes: int = 0) -> None:
        self._groups = groups
        self._group_stats = group_stats
        self._pulse = pulse
        self._pool = pool
        self.workers_configured = workers_configured
        self._supervisor = supervisor_pid
        self._arena_bytes = arena_bytes
        self._shares: tuple[int, dict] | None = None  # (ring version, shares): recomputed on a change

    @staticmethod
    def build() -> tuple[str, str]:
        """(GeeCache's version, Python's)."""
        return __version__, platform.python_version()

    def children(self) -> list[dict]:
        """Every child of the supervisor with a heartbeat cell, and the supervisor: label, pid,
        readiness, heartbeat age and /proc counters."""
        now = time.monotonic_ns()
        out = []
        beats = self._pulse.beats() if self._pulse is not None else []
        if not beats:  # no supervisor (an app in a test): this process alone
            out.append(_child("worker-0", "worker", 0, os.getpid(), True, 0.0, 0))
        for beat in beats:
            kind = "worker" if beat.slot is not None else "registrar"
            label = f"worker-{beat.slot}" if beat.slot is not None else "registrar"
            age = (now - beat.last_ns) / 1e9 if beat.last_ns else None
            out.append(_child(label, kind, beat.slot, beat.pid, bool(beat.last_ns), age, beat.started_ns))
        if self._supervisor:
            out.append(_child("supervisor", "supervisor", None, self._supervisor, True, None, 0))
        for child in out:
            child["proc"] = procstat.read(child["pid"])
        return out

    def ring(self) -> dict:
        """The member list this host routes by, its version, and each member's share of keys."""
        if self._pool is None:
            return {"version": 0, "self": None, "members": [], "shares": {}, "digest": ring_digest(())}
        version, ring = self._pool.ring()
        if self._shares is None or self._shares[0] != version:
            self._shares = (version, ring.shares())
        return {"version": version, "self": self._pool.self_address, "members": list(ring.nodes),
                "shares": self._shares[1], "digest": ring_digest(ring.nodes)}

    def breakers(self) -> dict[str, str] | None:
        """This worker's breaker state per ring peer (``geecache.cluster.breaker``); None without
        a pool (a host alone)."""
        if self._pool is None:
            return None
        me, breaker = self._pool.self_address, self._pool.breaker
        return {peer: breaker.state(peer) for peer in self.ring()["members"] if peer != me}

    def groups(self) -> list[dict]:
        """Per group, config order: host-wide counters, usage, hot copies and budget."""
        out = []
        for name, group in self._groups.items():
            doc = self._group_stats(name)
            doc["name"] = name
            doc["max_bytes"] = group.max_bytes
            out.append(doc)
        return out

    def document(self) -> dict:
        """The answer of ``GET /dashboard.json``."""
        version, python = self.build()
        ring = self.ring()
        members = [{"address": m, "share": round(ring["shares"].get(m, 0.0), 6), "self": m == ring["self"]}
                   for m in ring["members"]]
        children = []
        for child in self.children():
            proc = child.pop("proc")
            child.pop("started_ns")
            if proc is not None:
                child.update(cpu_seconds=round(proc.cpu_seconds, 2), rss_bytes=proc.resident_bytes,
                             start_time=proc.start_time)
            children.append(child)
        now = time.time()
        started = next((c.get("start_time") for c in children if c["kind"] == "supervisor"), None)
        return {
            "time": now, "pid": os.getpid(), "version": version, "python": python,
            "arena_bytes": self._arena_bytes, "workers_configured": self.workers_configured,
            "uptime_s": round(now - started, 1) if started else None,
            "ring": {"version": ring["version"], "digest": ring["digest"], "self": ring["self"],
                     "members": members},
            "groups": self.groups(), "processes": children, "breakers": self.breakers(),
            "http": metrics.http_summary(), "shm": shm_space(),
        }


    def summary(self) -> dict:
        """This host's figures for another host's cluster overview (``GET /_geecache``)."""
        doc = self.document()
        workers = [p for p in doc["processes"] if p["kind"] == "worker"]
        return {key: doc[key] for key in ("time", "version", "uptime_s", "ring", "groups", "http",
                                          "arena_bytes", "workers_configured")} | {
            "workers_ready": sum(1 for p in workers if p["ready"])}

    async def overview(self) -> dict:
        """Every ring member's figures: this host's, and each peer's asked of it now (at most
        OVERVIEW_TIMEOUT each, all at once); whether they all route by one member list."""
        mine = self.summary()
        hosts = [{"address": mine["ring"]["self"] or "this host", "self": True, **_figures(mine)}]
        peers = [m["address"] for m in mine["ring"]["members"] if not m["self"]]

        async def ask(address: str) -> dict:
            peer = self._pool.peer_for(address) if self._pool is not None else None
            if peer is None:
                return {"address": address, "self": False, "error": "not a peer of this host"}
            try:
                doc = await asyncio.wait_for(peer.summary(), OVERVIEW_TIMEOUT)
                return {"address": address, "self": False, **_figures(doc)}
            except (PeerError, asyncio.TimeoutError, KeyError, TypeError, ValueError) as exc:
                reason = str(exc) or f"no answer within {OVERVIEW_TIMEOUT:g}s"
                return {"address": address, "self": False, "error": reason}

        hosts += await asyncio.gather(*(ask(a) for a in peers))
        digests = {h["ring_digest"] for h in hosts if "ring_digest" in h}
        return {"time": time.time(), "hosts": hosts, "agreed": len(digests) == 1,
                "ring_digest": next(iter(digests)) if len(digests) == 1 else None}


def _figures(doc: dict) -> dict:
    """The overview's columns from one host's summary."""
    groups = doc.get("groups") or []
    total = lambda field: sum(g.get(field, 0) for g in groups)  # noqa: E731
    http = doc.get("http") or {}
    return {
        "ring_digest": doc["ring"]["digest"], "ring_members": len(doc["ring"]["members"]),
        "version": doc.get("version"), "uptime_s": doc.get("uptime_s"), "time": doc.get("time"),
        "workers_ready": doc.get("workers_ready"), "workers_configured": doc.get("workers_configured"),
        "gets": total("gets"), "hits": total("local_hits") + total("hot_hits") + total("peer_hits"),
        "loads": total("loads"), "evictions": total("evictions"), "bytes": total("bytes") + total("hot_bytes"),
        "entries": total("entries"), "arena_bytes": doc.get("arena_bytes"),
        "connections_open": http.get("connections_open"), "api_buckets": http.get("api_buckets", []),
    }


def _child(label: str, kind: str, slot, pid: int, ready: bool, age, started_ns: int) -> dict:
    return {"process": label, "kind": kind, "slot": slot, "pid": pid, "ready": ready,
            "heartbeat_age": None if age is None else round(age, 3), "started_ns": started_ns}


#: A short name of a member list, alike on every host with that list.
ring_digest = members_digest


def shm_space(path: str = "/dev/shm") -> dict:
    """Size and free bytes of the tmpfs the arena lives in (zeros when it cannot be read)."""
    try:
        st = os.statvfs(path)
    except OSError:
        return {"path": path, "size": 0, "free": 0}
    return {"path": path, "size": st.f_blocks * st.f_frsize, "free": st.f_bavail * st.f_frsize}


def page() -> bytes:
    """The dashboard page (read once per request: it is small, and an edit shows on reload)."""
    return resources.files("workers").joinpath("dashboard.html").read_bytes()
