"""SIGHUP: read the configuration again and say what of it can take effect in a running host.

The arbiter calls ``reread`` on SIGHUP and, when it returns a config, rolls
its workers onto it one at a time (``children.Workers.roll``): new workers
are forked with the new config, and each old one is told to stop only when
its replacement is ready.  The arena and the listening sockets stay, so no
request fails and no cached key is loaded again.

What a running host cannot change is kept as it is, each with a log line:
the socket (``host``, ``port``, ``bind``, ``reuseport``), the arena's
geometry (``arena``, ``arena_shards``, ``process_rows``, ``hot_share``),
the data dir, the etcd registration (``etcd``, ``advertise``, ``lease_ttl``,
held by the registrar child), and each group's place in the arena (the set
of groups, and each one's ``max_bytes``, ``policy``, ``item_limit``).
Everything else (worker count, timeouts, log level, TLS files, token, peer
list, each group's TTL, codec and source) reaches the new workers.

Code is not reloaded: workers are forked from the supervisor, which keeps
the modules it imported at start (GeeCache's and the loaders').  New code
comes with a warm restart (SIGUSR1, then a start: ``warm``), which keeps the
cache as well.
"""

from __future__ import annotations

import logging

from geecache.config import HOST_SETTINGS, format_size, parse_args
from geecache.errors import ConfigError

log = logging.getLogger("geecache.supervisor")

#: Host settings a running host cannot change (see the module docstring).
FIXED = ("host", "port", "bind", "admin_host", "admin_port", "reuseport", "arena", "arena_shards", "process_rows", "hot_share",
         "data_dir", "etcd", "advertise", "lease_ttl")
#: Group settings fixed by the group's place in the arena.
FIXED_GROUP = ("max_bytes", "policy", "item_limit")
#: Never written to the log.
_SECRET = ("auth_token",)


def _shown(name: str, value) -> str:
    if name in _SECRET:
        return "(set)" if value else "(unset)"
    if name in ("arena", "max_bytes", "item_limit") and isinstance(value, int):
        return format_size(value)
    return str(value)


def _source(g) -> str:
    return f"sqlite {g.sqlite}" if g.sqlite is not None else f"loader {g.loader}"


def reread(argv: list[str] | None, environ, running, started):
    """The config to roll the workers onto, or None (the running one stays; the log says why).

    *running* is the live config (its port resolved, its advertise derived),
    *started* the config as first parsed: a fixed setting is reported only
    when the file or environment now asks for something other than it did.
    """
    try:
        new = parse_args(argv, environ)
    except ConfigError as exc:
        log.error("SIGHUP: config error: %s; the running configuration stays", exc)
        return None
    except SystemExit:  # argparse refused the (unchanged) command line: cannot happen, never fatal
        log.error("SIGHUP: the command line no longer parses; the running configuration stays")
        return None
    return merge(running, started, new)


def merge(running, started, new):
    """*new* with every fixed setting put back to *running*'s, each one logged; the changes logged."""
    for name in FIXED:
        asked, was = getattr(new, name), getattr(started, name)
        if asked != was:
            log.warning("SIGHUP: %s cannot change while the host runs (%s asked, %s kept); a restart "
                        "applies it", name, _shown(name, asked), _shown(name, was))
        setattr(new, name, getattr(running, name))
    needed = new.workers + (1 if new.etcd else 0)
    if needed > new.process_rows:
        log.warning("SIGHUP: %d workers do not fit the arena's %d process rows; keeping %d workers",
                    new.workers, new.process_rows, running.workers)
        new.workers = running.workers
    new.groups = _merge_groups(running.groups, new.groups)
    changed = [f"{s.name} {_shown(s.name, getattr(running, s.name))} → {_shown(s.name, getattr(new, s.name))}"
               for s in HOST_SETTINGS if getattr(running, s.name) != getattr(new, s.name)]
    for i, (old, g) in enumerate(zip(running.groups, new.groups)):
        changed += [f"groups[{i}].{f} {getattr(old, f)} → {getattr(g, f)}"
                    for f in ("ttl", "codec", "sqlite", "table", "loader") if getattr(old, f) != getattr(g, f)]
    log.info("SIGHUP: configuration read again; %s", "changed: " + "; ".join(changed) if changed
             else "nothing changed (the workers are replaced all the same)")
    return new


def _merge_groups(running: list, asked: list) -> list:
    """The running groups, in their order, each with the asked settings that may change."""
    by_name = {g.name: g for g in asked}
    added = [g.name for g in asked if g.name not in {r.name for r in running}]
    if added:
        log.warning("SIGHUP: new groups (%s) need room declared in the arena at start; not served "
                    "until a restart", ", ".join(added))
    out = []
    for i, old in enumerate(running):
        g = by_name.get(old.name)
        if g is None:
            log.warning("SIGHUP: group %s is no longer in the config; it stays served until a restart",
                        old.name)
            out.append(old)
            continue
        for f in FIXED_GROUP:
            if getattr(g, f) != getattr(old, f):
                log.warning("SIGHUP: groups[%d].%s cannot change while the host runs (%s asked, %s kept); "
                            "a restart applies it", i, f, _shown(f, getattr(g, f)), _shown(f, getattr(old, f)))
                setattr(g, f, getattr(old, f))
        g.demo = old.demo
        if _source(g) != _source(old):
            log.warning("SIGHUP: groups[%d] (%s) now loads from %s; entries cached from %s stay until "
                        "they expire, are evicted or are written", i, g.name, _source(g), _source(old))
        out.append(g)
    return out
