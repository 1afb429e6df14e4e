"""Config to live objects inside a worker: sources, the peer picker, the Groups.

Runs after fork: SQLite connections and aiohttp sessions must belong to the
process (and event loop) that uses them.
"""

from __future__ import annotations

import ssl
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from geecache.cache import Cache, HostFlight
from geecache.cluster.breaker import Breaker
from geecache.cluster.peers import PeerPicker
from geecache.cluster.httppeer import peer_url
from geecache.cluster.pool import HTTPPool, MemberSource, StaticMembers
from geecache.group import Group
from geecache.storage import SQLiteStorage, Storage, load_source
from geecache.writelog import WriteLog

if TYPE_CHECKING:
    # geecache.config makes Config and GroupConfig at import (dataclasses.make_dataclass over
    # its settings tables), so mypy sees no fields on them: to it they are Any.
    Config = Any
    GroupConfig = Any
else:
    from geecache.config import Config, GroupConfig


class Executors:
    """A worker's two bounded thread pools: loads (``load_threads``) and source writes
    (``write_threads``).  Apart, and not asyncio's default pool, so loaders that hang
    can fill only their own pool: a PUT, or a load that must time out, never queues
    behind them.  Threads start on first use, in the worker."""

    def __init__(self, cfg: Config) -> None:
        self.loads = ThreadPoolExecutor(cfg.load_threads, thread_name_prefix="geecache-load")
        self.writes = ThreadPoolExecutor(cfg.write_threads, thread_name_prefix="geecache-write")


def open_source(g: GroupConfig, executors: Executors | None = None) -> Storage:
    """The Storage a group reads from: its SQLite table or its loader function."""
    if g.sqlite is not None:
        return SQLiteStorage(g.sqlite, g.table, executor=executors and executors.writes,
                             synchronous=g.synchronous, busy_timeout=g.busy_timeout)
    return load_source(g.loader, executor=executors and executors.loads)


def build_peers(cfg: Config, arena: MemberSource, write_log: WriteLog | None = None) -> HTTPPool | None:
    """The cluster's peer picker, or None for a host alone.

    With etcd the member list is the arena's ring region (the registrar
    writes it); with ``--peers`` it is that fixed list plus this host.
    Call inside the worker's event loop: the pool's connections belong to it.
    *write_log* (``geecache.writelog``, shared by the host's workers) records
    every write this host applies, for hosts that were away to ask.
    """
    if not cfg.etcd and not cfg.peers:
        return None
    tls = cfg.tls_cert is not None
    ssl_context = ssl.create_default_context(cafile=cfg.tls_ca) if cfg.tls_ca else None
    members: MemberSource
    if cfg.etcd:
        self_address, members = cfg.advertise, arena
    else:
        self_address = peer_url(cfg.advertise or f"{cfg.host}:{cfg.port}", tls)
        members = StaticMembers(list(cfg.peers) + ([self_address] if self_address not in cfg.peers else []))
    return HTTPPool(self_address, members, token=cfg.auth_token, tls=tls, ssl_context=ssl_context,
                    codecs={g.name: g.codec for g in cfg.groups},
                    connect_timeout=cfg.peer_connect_timeout, read_timeout=cfg.peer_read_timeout,
                    breaker=Breaker(failures=cfg.breaker_failures, cooldown=cfg.breaker_cooldown,
                                    max_cooldown=cfg.breaker_max_cooldown),
                    # A paused host re-joins within its lease TTL of resuming.
                    replay_window=cfg.lease_ttl + 1.0, handoff_window=cfg.handoff_window, write_log=write_log)


def build_groups(cfg: Config, cache: Cache, flight: HostFlight, peers: PeerPicker | None = None
                 ) -> dict[str, Group]:
    """Every configured group over the shared *cache* and host-wide *flight*, in config order."""
    executors = Executors(cfg)
    return {
        g.name: Group(
            g.name, open_source(g, executors), max_bytes=g.max_bytes, policy=g.policy, ttl=g.ttl,
            codec=g.codec, cache=cache, flight=flight, peers=peers, item_limit=g.item_limit,
            hot_ttl=cfg.hot_ttl, hot_share=cfg.hot_share, flight_wait=cfg.flight_wait,
            load_timeout=g.load_timeout, hot_after=cfg.hot_after)
        for g in cfg.groups
    }


def close_sources(groups: dict[str, Group]) -> None:
    """Close what the sources hold open (SQLite connections); best effort at exit."""
    for group in groups.values():
        # The source is the user's object: a loader function holds nothing to close.
        close = getattr(group.source, "close", None)
        if callable(close):
            close()
