"""Set a host up and run its arbiter: parse, seed, bind, create the arena, supervise, clean up.

Exit status: 0 clean stop, 1 runtime failure (e.g. the port is taken),
2 invalid configuration (before anything forks), 3 workers failed to boot.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import os
import sys

from geecache import leftovers
from geecache.observability import logs, metrics
from geecache.config import DEMO_ROWS, exposure, parse_args
from geecache.errors import ConfigError, reported_as
from geecache.group import declare_partitions
from geecache.shm import Arena
from geecache.storage import SQLiteStorage

from . import warm
from .arbiter import Arbiter, bind

log = logging.getLogger("geecache.supervisor")


def address(host: str, port: int) -> str:
    """``host:port``, an IPv6 host in brackets (``[::1]:8001``), as ``--bind`` spells it."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def seed_demo(path: str) -> None:
    """Create the demo database with the classic rows, if it does not exist yet."""
    if os.path.exists(path):
        return
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


def configure_arena(cfg, arena) -> None:
    """Declare every group in the arena before forking, so a budget that does not fit
    is a config error now rather than a boot failure in every worker."""
    for i, g in enumerate(cfg.groups):
        with reported_as(lambda inner, i=i: f"groups[{i}].{inner}"):
            declare_partitions(arena, g.name, g.max_bytes, g.policy, cfg.hot_share)


def create_arena(cfg):
    """The host's shared-memory arena, sized once."""
    check_shm_space(cfg.arena, field=cfg.named("arena"))
    with reported_as(cfg.named("arena")):
        # Every group takes two records: itself and its hot partition.
        return Arena.create(cfg.arena, item_limit=cfg.item_limit, max_groups=max(32, 2 * len(cfg.groups)),
                            shards=cfg.arena_shards, max_procs=cfg.process_rows)


def check_shm_space(size: int, shm_dir: str = "/dev/shm", field: str = "arena") -> None:
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
        raise ConfigError(field, f"{size} bytes do not fit in {shm_dir} ({free} bytes free); "
                                 "lower it or enlarge the tmpfs (docker: --shm-size)")


def leave_warm(state, arena, cfg, started) -> bool:
    """Record *arena* in *state* for a warm restart; False when it must be removed instead."""
    if started.port == 0:
        log.warning("removing arena %s after all: a warm restart needs a fixed port (a next start "
                    "with --port 0 would never find it)", arena.name)
        return False
    if not leftovers.record(state, arena.name, None, warm.record(cfg)):
        return False  # unrecorded, it would leak: removed (the warning names the reason)
    log.info("arena %s left for a warm restart on port %d (state file %s)", arena.name, cfg.port, state)
    return True


def main(argv: list[str] | None = None) -> int:
    """Parse, validate, set up, supervise; return the exit status."""
    try:
        cfg = parse_args(argv)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    # As parsed, before the port is resolved and advertise derived: what SIGHUP compares against.
    started = copy.deepcopy(cfg)
    logs.configure(cfg.log_level, cfg.log_format)
    log.info("protection: %s", exposure(cfg))
    try:
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
        print(f"error: cannot listen on {address(cfg.host, cfg.port)}: {exc.strerror}", file=sys.stderr)
        return 1
    if cfg.port == 0:
        cfg.port = sock.getsockname()[1]
    try:
        admin_sock = bind(cfg, cfg.reuseport, admin=True)
    except OSError as exc:
        sock.close()
        print(f"error: cannot listen on {cfg.admin_host}:{cfg.admin_port} (the admin port): {exc.strerror}",
              file=sys.stderr)
        return 1
    if cfg.admin_port == 0:
        cfg.admin_port = admin_sock.getsockname()[1]
    if cfg.etcd and not cfg.advertise:
        if cfg.host in ("0.0.0.0", "::", ""):
            sock.close()
            admin_sock.close()
            where = cfg.sources.get("bind") or cfg.sources.get("host", "--host")
            print(f"config error: advertise: {where} {cfg.host or '*'} is no address other hosts can "
                  "reach; give --advertise HOST:PORT", file=sys.stderr)
            return 2
        cfg.advertise = address(cfg.host, cfg.port)
    state = leftovers.state_path(cfg.data_dir, cfg.port)
    left = leftovers.reclaim(state)
    metrics_dir, created = metrics.prepare_multiproc_dir()
    log.info("metrics directory %s", metrics_dir)
    arena = arb = None
    away_since = 0
    try:
        if left is not None:
            arena = warm.reattach(*left, cfg, configure_arena)
            if arena is not None and (cfg.etcd or cfg.peers):
                away_since = warm.away_since_ns(left[1])
        if arena is None:
            arena = create_arena(cfg)
            configure_arena(cfg, arena)
        leftovers.record(state, arena.name, metrics_dir if created else None)
        if cfg.etcd:
            # Alone until the registrar says otherwise: the ring is usable from the first request.
            arena.write_ring([cfg.advertise])
        arb = Arbiter(cfg, arena, sock, admin_sock, argv, started)
        if away_since:  # the workers ask the other hosts what changed before they serve
            arb.write_log.mark_unsure(away_since, arena.ring_version())
        return arb.run()
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    finally:
        sock.close()
        admin_sock.close()
        metrics.remove_multiproc_dir(metrics_dir, created)
        if arena is not None and arb is not None and arb.warm and leave_warm(state, arena, arb.cfg, started):
            arena.close()  # left in /dev/shm, recorded for the next start on this port
        else:
            if arena is not None:
                warm.drop(arena)
            leftovers.forget(state)
