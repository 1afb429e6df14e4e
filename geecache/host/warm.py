"""Warm restart (memcached 1.6's): an arena left in /dev/shm by SIGUSR1, taken up by the next start.

A supervisor stopped with SIGUSR1 stops its children as SIGTERM does but
leaves its arena in place and records, in its state file (``leftovers``),
the arena's name and the *fingerprint* of what it was made for: the layout
version, the geometry it was created with, and every group's budget, policy,
item limit, TTL and source.  The next supervisor on the same port and data
dir computes the fingerprint of its own config; when the two agree it maps
the old arena (``Arena.attach``) instead of creating one, so every cached key
is served without loading it again.  When they differ, the arena is removed
and the log names the first difference.

Two settings are not in the fingerprint because they do not change what a
cached value means: a group's codec (values carry their codec id) and its
load timeout.  In a cluster (``etcd`` or ``peers``) the hot copies of keys
other hosts own are dropped on reattach, since invalidations sent while the
host was down were lost, and the workers drop the owned copies that other
hosts wrote meanwhile, asking their write logs (``PauseGuard.after_absence``,
before they serve: invariant 9); with etcd, an arena left for longer than
``lease_ttl`` is discarded, since the host's lease may have expired and other
hosts may have taken writes for its keys.
"""

from __future__ import annotations

import logging
import time

from geecache.config import format_size
from geecache.errors import ConfigError, GeeCacheError
from geecache.limits import hot_group_name
from geecache.shm import Arena, segment
from geecache.shm.layout import LAYOUT_VERSION
from geecache.stats import STAT_FIELDS

log = logging.getLogger("geecache.supervisor")


def _source(g) -> str:
    return f"sqlite {g.sqlite} table {g.table}" if g.sqlite is not None else f"loader {g.loader}"


def fingerprint(cfg) -> dict:
    """What an arena made for *cfg* is: layout, geometry, groups (JSON-serialisable).

    The number of counters per stat row is geometry too: code with more
    counters would write past an older arena's rows.
    """
    return {
        "layout": LAYOUT_VERSION,
        "geometry": {"arena": cfg.arena, "arena_shards": cfg.arena_shards, "process_rows": cfg.process_rows,
                     "max_groups": max(32, 2 * len(cfg.groups)), "item_limit": cfg.item_limit,
                     "stat_fields": len(STAT_FIELDS)},
        "hot_share": cfg.hot_share,
        "groups": [{"name": g.name, "max_bytes": g.max_bytes, "policy": g.policy, "item_limit": g.item_limit,
                    "ttl": g.ttl, "source": _source(g)} for g in cfg.groups],
    }


def _shown(field: str, value) -> str:
    if field in ("arena", "max_bytes", "item_limit") and isinstance(value, int):
        return format_size(value)
    return repr(value) if isinstance(value, str) else str(value)


def difference(left: dict, now: dict) -> str | None:
    """The first way the arena recorded as *left* does not fit *now*, in words; None when it fits."""
    if left.get("layout") != now["layout"]:
        return f"its layout is version {left.get('layout')}, this code's is {now['layout']}"
    for field, value in now["geometry"].items():
        old = left.get("geometry", {}).get(field)
        if old != value:
            return f"{field} was {_shown(field, old)}, is now {_shown(field, value)}"
    if left.get("hot_share") != now["hot_share"]:
        return f"hot_share was {left.get('hot_share')}, is now {now['hot_share']}"
    old_groups, new_groups = left.get("groups", []), now["groups"]
    old_names, new_names = [g.get("name") for g in old_groups], [g["name"] for g in new_groups]
    if old_names != new_names:
        return f"the groups were {', '.join(map(str, old_names))}; now {', '.join(new_names)}"
    for i, (old, new) in enumerate(zip(old_groups, new_groups)):
        for field, value in new.items():
            if old.get(field) != value:
                return (f"groups[{i}] ({new['name']}) {field} was {_shown(field, old.get(field))}, "
                        f"is now {_shown(field, value)}")
    return None


def record(cfg, stopped_at: float | None = None) -> dict:
    """The ``warm`` entry of the state file: the fingerprint, when it stopped (wall clock, and
    CLOCK_MONOTONIC, which is the machine's and goes on across processes), whether it was in etcd."""
    return {**fingerprint(cfg), "stopped_at": time.time() if stopped_at is None else stopped_at,
            "stopped_mono_ns": time.monotonic_ns(), "lease_ttl": cfg.lease_ttl if cfg.etcd else None}


def away_since_ns(left: dict) -> int:
    """When (``time.monotonic_ns``) the host that left *left* stopped; ``now`` when unknown or
    in the future (a reboot restarts the monotonic clock, but also empties /dev/shm).

    The reattaching workers ask the other hosts' write logs for the time since then.
    """
    now = time.monotonic_ns()
    try:
        stopped = int(left.get("stopped_mono_ns", 0))
    except (TypeError, ValueError):
        stopped = 0
    if not 0 < stopped <= now:  # recorded by an older version: the wall clock says how long
        away = max(0.0, time.time() - float(left.get("stopped_at", 0) or 0))
        stopped = now - int(away * 1e9)
    return max(stopped, 1)


def why_not(left: dict, cfg, now: float | None = None) -> str | None:
    """Why the arena left as *left* cannot serve *cfg* (None: it can)."""
    reason = difference(left, fingerprint(cfg))
    if reason:
        return reason
    away = (time.time() if now is None else now) - float(left.get("stopped_at", 0))
    ttl = left.get("lease_ttl")
    if cfg.etcd and ttl is not None and away >= ttl:
        return (f"it was left {away:.0f}s ago, longer than the etcd lease_ttl ({ttl}s): other hosts "
                "may have owned its keys and taken writes for them meanwhile")
    return None


def reattach(name: str, left: dict, cfg, configure) -> Arena | None:
    """The arena *name* mapped for *cfg*, or None (it was unlinked, and the log says why).

    *configure* (``main.configure_arena``) declares the config's groups in it:
    a budget the arena does not hold as recorded is one more reason to discard it.
    """
    reason = why_not(left, cfg)
    arena = None
    if reason is None:
        try:
            arena = Arena.attach(name)
            if arena.item_limit != cfg.item_limit:
                reason = f"its item limit is {arena.item_limit}, the config's {cfg.item_limit}"
            else:
                configure(cfg, arena)
        except (GeeCacheError, ConfigError, OSError, ValueError) as exc:
            reason = f"it cannot be mapped as recorded ({exc})"
    if reason is not None:
        if arena is not None:
            arena.close()
        segment.unlink(name)
        log.warning("discarding arena %s left for a warm restart: %s", name, reason)
        return None
    assert arena is not None  # no reason to discard it: it was attached
    if cfg.etcd or cfg.peers:
        # Invalidations sent while the host was down never arrived: a hot copy may be stale.
        for g in cfg.groups:
            arena.clear(hot_group_name(g.name))
    entries = sum(arena.usage(g.name)[1] for g in cfg.groups)
    log.info("reattached arena %s left for a warm restart: %d cached entries in %d groups%s", name, entries,
             len(cfg.groups), "; hot copies dropped" if cfg.etcd or cfg.peers else "")
    return arena


def drop(arena) -> None:
    """Unmap and remove *arena*, whether this process created it or reattached it."""
    name = arena.name
    arena.close()
    segment.unlink(name)
