"""Host configuration: every setting declared once, read from TOML, the environment and flags.

Each host setting is one ``Setting`` row in ``HOST_SETTINGS`` (name, kind,
default, check, help); the command line (``--<name>``), the environment
(``GEECACHE_<NAME>``) and the TOML file (``<name> = ...``) are derived from
that table, as are ``Config``'s attributes and the reference table in
docs/operations.md (``scripts/settings_reference.py``).  ``[[groups]]``
entries have their own table, ``GROUP_SETTINGS``.  Precedence: flag >
environment > file > default.  gunicorn's ``config.py`` is the model.

Everything the supervisor needs is parsed and checked here, in the
supervisor, before anything forks: a bad config must end the program with
one message naming the field (``groups[1].max_bytes: ...``, ``--port: ...``,
``GEECACHE_WORKERS: ...``), never with a worker crash loop.

File shape (every key optional; with no ``[[groups]]`` the demo group
``scores`` is served from an embedded SQLite database in the data dir)::

    host = "127.0.0.1"
    port = 8001
    workers = 4
    arena = "256MiB"
    etcd = ["http://127.0.0.1:2379"]
    advertise = "10.0.0.5:8001"

    [[groups]]
    name = "scores"
    max_bytes = "64MiB"
    policy = "lru"          # or "lru2", "s3fifo", "s3lfu", "tinylfu", "adaptive"
    ttl = 0                 # seconds; 0 = no expiry
    codec = "none"
    item_limit = "1MiB"
    sqlite = "scores.db"    # relative to the config file; or:
    table = "kv"
    # loader = "mypkg.mod:load"
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import math
import os
import platform
import re
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit

from .version import __version__
from .defaults import (
    DEFAULT_BATCH_INFLIGHT_BYTES, DEFAULT_BATCH_MAX_BYTES, DEFAULT_BATCH_MAX_KEYS, DEFAULT_HEADER_TIMEOUT,
    DEFAULT_KEEPALIVE_TIMEOUT, DEFAULT_LOAD_TIMEOUT, DEFAULT_MAX_CONNECTIONS, DEFAULT_PEER_CONNECT_TIMEOUT,
    DEFAULT_PEER_READ_TIMEOUT,
)
from .errors import ConfigError, reported_as
from .hlc import DEFAULT_MAX_DRIFT
from .limits import DEFAULT_ITEM_LIMIT, POLICIES, check_group_name
from geecache.observability.logs import LOG_FORMATS
from geecache.cluster.registry.config import parse_endpoints, validate_advertise

DEFAULT_PORT = 8001
DEFAULT_ARENA = 256 << 20
DEFAULT_GROUP_BYTES = 64 << 20
DEFAULT_LEASE_TTL = 10
MIN_LEASE_TTL = 2
DEFAULT_GRACEFUL_TIMEOUT = 10.0
#: gunicorn's --timeout: a child whose loop has not stamped its heartbeat for this long is replaced.
DEFAULT_WORKER_TIMEOUT = 30.0
#: Shortest worker_timeout: the heartbeat is stamped 4 times per timeout, and a
#: loop busy for a quarter of a second on one request must not look hung.
MIN_WORKER_TIMEOUT = 1.0
#: The admin port's default distance from the data port.
ADMIN_PORT_OFFSET = 1000
MAX_WORKERS = 1024
#: Per-process stat rows the arena has when the config does not say: every worker,
#: the registrar and the workers still retiring after SIGTTOU each hold one, so
#: there is room to double the workers with SIGTTIN.
MIN_PROCESS_ROWS = 64
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
DEMO_GROUP = "scores"
#: The demo database's rows: the classic GeeCache example.
DEMO_ROWS = {"Tom": b"630", "Jack": b"589", "Sam": b"567"}

_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "kib": 1 << 10,
    "m": 1000**2, "mb": 1000**2, "mib": 1 << 20,
    "g": 1000**3, "gb": 1000**3, "gib": 1 << 30,
    "t": 1000**4, "tb": 1000**4, "tib": 1 << 40,
}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(value: Any, field_name: str = "size") -> int:
    """Bytes from an int or a string like ``64MiB``, ``1GB``, ``512k``; > 0.

    Decimal units (KB, MB, GB) are powers of 1000, binary ones (KiB, MiB, GiB)
    powers of 1024, as the SI/IEC names say; a bare number is bytes.
    """
    if isinstance(value, bool):
        raise ConfigError(field_name, f"expected a size like 64MiB, got {value!r}")
    if isinstance(value, int):
        n = value
    elif isinstance(value, str):
        m = _SIZE_RE.match(value)
        unit = m and _UNITS.get(m.group(2).lower())
        if not m or unit is None:
            raise ConfigError(
                field_name,
                f"cannot parse size {value!r}; use an integer of bytes or a number "
                "with a unit B, KB, KiB, MB, MiB, GB, GiB, TB, TiB",
            )
        n = int(float(m.group(1)) * unit)
    else:
        raise ConfigError(field_name, f"expected a size like 64MiB, got {type(value).__name__}")
    if n <= 0:
        raise ConfigError(field_name, f"must be positive, got {value!r}")
    return n


def format_size(n: int) -> str:
    """A size in the largest binary unit that divides it (for messages and logs)."""
    for unit, factor in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= factor and n % factor == 0:
            return f"{n // factor}{unit}"
    return f"{n}B"


def known_codecs() -> tuple[str, ...]:
    """Codec names the compression registry offers."""
    from .compression import CODECS

    return tuple(c.name for c in CODECS)


def default_data_dir() -> Path:
    """``$XDG_DATA_HOME/geecache`` when that is set, else ``./geecache-data``."""
    xdg = os.environ.get("XDG_DATA_HOME")
    return Path(xdg) / "geecache" if xdg else Path("geecache-data")


def default_process_rows(workers: int) -> int:
    """Stat rows for *workers*: room for SIGTTIN to double them, plus the registrar and retirees."""
    return max(MIN_PROCESS_ROWS, 2 * workers + 4)


# -- kinds: how a value of one type is read ---------------------------------
#
# A TOML value arrives typed (``port = "8001"`` is an error, as it is a
# string); a flag or an environment variable arrives as text and is parsed.


@dataclass(frozen=True)
class Kind:
    """One type of setting: its Python type, how the reference names it, how values are read."""

    type: Any
    what: str
    #: (value, field name, value is text from a flag or the environment) -> value
    read: Callable[[Any, str, bool], Any]


def _typed(value: Any, types: type | tuple[type, ...], fname: str, what: str) -> Any:
    if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise ConfigError(fname, f"expected {what}, got {value!r}")
    if not isinstance(value, types):
        raise ConfigError(fname, f"expected {what}, got {type(value).__name__} {value!r}")
    return value


def _read_int(value: Any, fname: str, text: bool) -> int:
    if text and isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            raise ConfigError(fname, f"expected an integer, got {value!r}") from None
    return _typed(value, int, fname, "an integer")


def _read_number(value: Any, fname: str, text: bool) -> float:
    if text and isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise ConfigError(fname, f"expected a number, got {value!r}") from None
    value = float(_typed(value, (int, float), fname, "a number"))
    # nan passes every range check (all comparisons are false) and inf never ends a wait.
    if not math.isfinite(value):
        raise ConfigError(fname, f"must be a finite number, got {value!r}")
    return value


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _read_bool(value: Any, fname: str, text: bool) -> bool:
    if text and isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE or word in _FALSE:
            return word in _TRUE
        raise ConfigError(fname, f"expected true or false, got {value!r}")
    return _typed(value, bool, fname, "true or false")


def _str_list(value: Any, fname: str, text: bool = False) -> list[str]:
    """A list from a TOML array or a comma-separated string."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise ConfigError(fname, f"expected a list of strings or a comma-separated string, got {value!r}")


STR = Kind(str, "string", lambda v, f, text: _typed(v, str, f, "a string"))
PATH = Kind(Path, "path", lambda v, f, text: Path(_typed(v, str, f, "a path")))
INT = Kind(int, "int", _read_int)
NUMBER = Kind(float, "number", _read_number)
SIZE = Kind(int, "size", lambda v, f, text: parse_size(v, f))
BOOL = Kind(bool, "bool", _read_bool)
LIST = Kind(list, "list or comma string", _str_list)


# -- checks: the value's range, after its kind has read it ------------------


def between(lo, hi, message: str = "must be between {lo} and {hi}, got {v}"):
    """A check that *lo* <= value <= *hi*."""
    def check(v, f):
        if not lo <= v <= hi:
            raise ConfigError(f, message.format(lo=lo, hi=hi, v=v))
    return check


def at_least(lo, unit: str = ""):
    """A check that value >= *lo*."""
    def check(v, f):
        if v < lo:
            raise ConfigError(f, f"must be at least {lo:g}{unit}, got {v:g}")
    return check


def _not_negative(v, f):
    if v < 0:
        raise ConfigError(f, f"must not be negative, got {v:g}")


def _positive(v, f):
    if v <= 0:
        raise ConfigError(f, f"must be positive, got {v:g}")


def one_of(names: Callable[[], tuple[str, ...]] | tuple[str, ...], what: str):
    """A check that value is one of *names* (or of what the callable returns)."""
    def check(v, f):
        known = names() if callable(names) else names
        if v not in known:
            raise ConfigError(f, f"unknown {what} {v!r}; known: {', '.join(known)}")
    return check


def _sqlite_synchronous() -> tuple[str, ...]:
    from .storage.sqlite import SYNCHRONOUS  # (lazily: the config check needs no sqlite3 import)

    return SYNCHRONOUS


def _non_empty(v, f):
    if not v:
        raise ConfigError(f, "must not be empty")


def _check_url(url: str, fname: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(fname, f"{url!r} is not an http(s)://host:port URL")
    try:
        parts.port
    except ValueError:
        raise ConfigError(fname, f"{url!r} has an invalid port") from None
    return url.rstrip("/")


def _check_peers(urls: list[str], fname: str) -> None:
    urls[:] = [_check_url(u, fname) for u in urls]


def _check_with(validator):
    """A check running another module's validator, its ConfigError renamed to our field."""
    def check(v, f):
        with reported_as(f):
            validator(v)
    return check


def parse_bind(value: str, fname: str = "bind") -> tuple[str, int]:
    """``(host, port)`` from a bind address as gunicorn spells it; ConfigError naming *fname*.

    ``HOST:PORT``, ``[IPv6]:PORT`` and ``:PORT`` (every interface, as in Go and
    gunicorn) are accepted.  The port is required: a bare IPv6 address would
    make ``HOST`` alone ambiguous.  ``unix:PATH`` and ``fd://N`` are refused:
    peers and the etcd registry reach a host at a TCP address.
    """
    text = value.strip()
    if text.startswith("unix:"):
        raise ConfigError(fname, f"{value!r}: unix sockets are not supported (peers and etcd reach a "
                                 "host at a TCP address); use HOST:PORT")
    if "://" in text:
        raise ConfigError(fname, f"{value!r}: only HOST:PORT, [IPv6]:PORT or :PORT (no scheme)")
    if text.startswith("["):
        host, closed, rest = text[1:].partition("]")
        if not closed or not rest.startswith(":"):
            raise ConfigError(fname, f"{value!r} is not [IPv6]:PORT")
        port_text = rest[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ConfigError(fname, f"{host!r} in brackets is not an IPv6 address") from None
    else:
        host, colon, port_text = text.rpartition(":")
        if not colon:
            raise ConfigError(fname, f"{value!r} has no port; use HOST:PORT, [IPv6]:PORT or :PORT")
        if ":" in host:
            raise ConfigError(fname, f"{value!r}: an IPv6 address goes in brackets, as in [::1]:{port_text}")
        host = host or "0.0.0.0"
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ConfigError(fname, f"{value!r}: {port_text!r} is not a TCP port (0..65535)")
    return host, int(port_text)


def _check_bind(v, f):
    parse_bind(v, f)


def _at_least(lo):
    """A check that value is >= *lo*."""
    def check(v, f):
        if v < lo:
            raise ConfigError(f, f"must be at least {lo:g}, got {v:g}")
    return check


def _zero_or_at_least(lo):
    """A check that value is 0 (off) or >= *lo*."""
    def check(v, f):
        if v != 0 and v < lo:
            raise ConfigError(f, f"must be 0 (off) or at least {lo:g}, got {v:g}")
    return check


def _share(v, f):
    if not 0 < v <= 1:
        raise ConfigError(f, f"must be a fraction in (0, 1], got {v:g}")


# -- the tables --------------------------------------------------------------

#: A default the config computes (the CPU count, the data dir) rather than a constant.
@dataclass(frozen=True)
class Computed:
    """A default computed when a Config is made; *shown* is how the reference states it."""

    make: Callable[[], Any]
    shown: str


@dataclass(frozen=True, kw_only=True)
class Setting:
    """One setting: the single place its name, type, default, check and help are written.

    Rows name every field (``Setting(name="workers", kind=INT, default=...)``), as gunicorn's
    ``class Workers(Setting)`` does, so a row reads without counting positions.
    """

    name: str
    kind: Kind
    default: Any
    help: str
    check: Callable[[Any, str], None] | None = None
    metavar: str | None = None
    #: The type column of the reference when the kind's name says too little (``int 1..1024``).
    what: str | None = None
    #: How the reference states a default of None (``<host>:<port>``, ``CPU count``).
    shown: str | None = None
    #: Host settings come from flags and the environment too; group settings only from the file.
    cli: bool = True
    #: A one-letter flag as well, where gunicorn has one (``-w``, ``-b``).
    short: str | None = None
    #: The values a word setting takes, listed by ``--help`` (``{debug,info,...}``).
    choices: tuple[str, ...] | None = None

    @property
    def flag(self) -> str:
        """The command-line flag: ``--graceful-timeout``."""
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        """The environment variable: ``GEECACHE_GRACEFUL_TIMEOUT``."""
        return "GEECACHE_" + self.name.upper()

    def read(self, value: Any, fname: str, text: bool = False) -> Any:
        """*value* read and checked; ConfigError naming *fname* otherwise."""
        value = self.kind.read(value, fname, text)
        if self.check is not None:
            self.check(value, fname)
        return value

    def make_default(self) -> Any:
        """A fresh default value (lists are not shared between Configs)."""
        if isinstance(self.default, Computed):
            return self.default.make()
        return list(self.default) if isinstance(self.default, list) else self.default

    def shown_default(self) -> str:
        """The default as the reference and ``--help`` state it."""
        if isinstance(self.default, Computed):
            return self.default.shown
        if self.default is None or self.default == []:
            return self.shown or "none"
        if self.kind is SIZE:
            return format_size(self.default)
        if self.kind is BOOL:
            return str(self.default).lower()
        if isinstance(self.default, float):
            return f"{self.default:g}"
        return str(self.default)


def _check_batch_bytes(value: int, fname: str) -> None:
    # A peer answers one batch in one body, and the peer client refuses bodies past 64 MiB.
    if value > 64 << 20:
        raise ConfigError(fname, f"{format_size(value)} is over 64MiB")


HOST_SETTINGS: tuple[Setting, ...] = (
    Setting(name="workers", kind=INT, default=Computed(lambda: os.cpu_count() or 1, "CPU count"),
            help="worker processes", check=between(1, MAX_WORKERS), metavar="N", what=f"int 1..{MAX_WORKERS}", short="-w"),
    Setting(name="host", kind=STR, default="127.0.0.1",
            help="address to bind (`0.0.0.0`, `::`, or one interface)", metavar="HOST"),
    Setting(name="port", kind=INT, default=DEFAULT_PORT,
            help="the data port: `/api`, the peer API, `/healthz`; `0` = any free",
            check=between(0, 65535, "{v} is not a TCP port"), metavar="PORT", what="int 0..65535"),
    Setting(name="bind", kind=STR, default=None,
            help="address and port in one, as gunicorn takes them: `HOST:PORT`, `[IPv6]:PORT`, or `:PORT` "
            "for every interface; instead of `host` and `port` (giving both is an error)",
            check=_check_bind, metavar="ADDR", what="`HOST:PORT`", shown="`<host>:<port>`", short="-b"),
    Setting(name="admin_host", kind=STR, default="127.0.0.1",
            help="address the admin port binds: loopback unless metrics, stats and the dashboard must be "
            "reachable from elsewhere (plain HTTP, no token)", metavar="HOST"),
    Setting(name="admin_port", kind=INT, default=None,
            help="the admin port (aiohttp): `/metrics`, `/stats`, `/cluster`, `/healthz`, `/`; `0` = any free",
            check=between(0, 65535, "{v} is not a TCP port"), metavar="PORT", what="int 0..65535",
            shown="`port` + 1000 (any free when `port` is 0)"),
    Setting(name="header_timeout", kind=NUMBER, default=DEFAULT_HEADER_TIMEOUT,
            help="seconds a client has to send a request's head, and the longest pause inside its body, "
            "before a 408 and close (slowloris); also how long a new connection may stay silent "
            "before it is closed", check=_positive, metavar="S", what="number > 0"),
    Setting(name="keepalive_timeout", kind=NUMBER, default=DEFAULT_KEEPALIVE_TIMEOUT,
            help="seconds an idle keep-alive connection stays open on the data port", check=_positive, metavar="S",
            what="number > 0"),
    Setting(name="max_connections", kind=INT, default=DEFAULT_MAX_CONNECTIONS,
            help="open data-port connections per worker (lowered to the file-descriptor limit); at it, the "
            "longest-idle keep-alive connection is closed for a new one, and only when none is idle "
            "does the new one get a 503", check=between(1, 1_000_000), metavar="N", what="int 1..1000000"),
    Setting(name="arena", kind=SIZE, default=DEFAULT_ARENA,
            help="shared-memory arena, sized once at start (its pages are taken as the cache fills)",
            metavar="SIZE"),
    Setting(name="data_dir", kind=PATH, default=Computed(default_data_dir, "`$XDG_DATA_HOME/geecache`, else `./geecache-data`"),
            help="where the demo database and the state file `supervisor-<port>.state` (this host's arena, "
            "for the next start to reclaim) live; relative to the working directory", metavar="DIR"),
    Setting(name="auth_token", kind=STR, default=None,
            help="bearer token for public `PUT`/`DELETE` and **all** peer requests "
            "(prefer the environment: it stays out of `ps`)", check=_non_empty, metavar="T", what="non-empty string"),
    Setting(name="trusted_network", kind=BOOL, default=False,
            help="serve without `auth_token` on a `host` other than loopback: every host that can reach the "
            "data port may then write and call the peer API; without it such a start is refused"),
    Setting(name="max_clock_drift", kind=NUMBER, default=DEFAULT_MAX_DRIFT,
            help="seconds a peer write's version (its originator's clock) may be ahead of this host's clock; "
            "a write further ahead is refused with a 400 and never stored", check=_positive, metavar="S", what="number > 0"),
    Setting(name="etcd", kind=LIST, default=[],
            help="etcd endpoints `[http://]host[:port]` (port 2379 if omitted; `https` is refused); "
            "enables registration and discovery", check=_check_with(parse_endpoints), metavar="URL[,URL]"),
    Setting(name="advertise", kind=STR, default=None,
            help="the address other hosts reach this one at; also its etcd key and ring member name",
            check=_check_with(validate_advertise), metavar="HOST:PORT", shown="`<host>:<port>` (with `--etcd`)"),
    Setting(name="lease_ttl", kind=INT, default=DEFAULT_LEASE_TTL,
            help="etcd lease TTL (seconds): how long an unreachable host stays in the ring",
            check=at_least(MIN_LEASE_TTL, " seconds"), metavar="S", what=f"int ≥ {MIN_LEASE_TTL}"),
    Setting(name="peers", kind=LIST, default=[], help="static member list instead of etcd (not both)", check=_check_peers,
            metavar="URL,...", what="list of `http(s)://host:port`"),
    Setting(name="tls_cert", kind=STR, default=None,
            help="PEM certificate: the port serves HTTPS; peers are called over https (needs `tls_key`)",
            metavar="FILE", what="path"),
    Setting(name="tls_key", kind=STR, default=None, help="PEM private key (needs `tls_cert`)", metavar="FILE", what="path"),
    Setting(name="tls_ca", kind=STR, default=None, help="CA bundle that peer certificates are verified against",
            metavar="FILE", what="path", shown="system CA store"),
    Setting(name="reuseport", kind=BOOL, default=False,
            help="one `SO_REUSEPORT` socket per worker (kernel load-balances) instead of one shared socket"),
    Setting(name="graceful_timeout", kind=NUMBER, default=DEFAULT_GRACEFUL_TIMEOUT,
            help="seconds in-flight requests get after SIGTERM; stragglers are killed 2 s later",
            check=_not_negative, metavar="S", what="number ≥ 0"),
    Setting(name="worker_timeout", kind=NUMBER, default=DEFAULT_WORKER_TIMEOUT,
            help="seconds a worker (or the registrar) may go without its event loop stamping its heartbeat "
            "(or, booting, without becoming ready) before the supervisor sends SIGABRT, then SIGKILL, "
            "and replaces it (gunicorn's `--timeout`); `0` = no watchdog",
            check=_zero_or_at_least(MIN_WORKER_TIMEOUT), metavar="S", what=f"0 or number ≥ {MIN_WORKER_TIMEOUT:g}"),
    Setting(name="pause_threshold", kind=NUMBER, default=0.9,
            help="seconds a worker's event loop may go without running before it counts as a pause: the "
            "worker may have missed invalidations (the other hosts wait 1 s for one), so it asks them "
            "which keys they wrote meanwhile and drops those copies; above 1 s a pause may serve "
            "stale copies until they are written again or expire",
            check=_at_least(0.2), metavar="S", what="number ≥ 0.2"),
    Setting(name="load_threads", kind=INT, default=16,
            help="threads per worker for loads that run in a thread (synchronous `loader` functions); a "
            "load waiting for one still counts against its group's `load_timeout`",
            check=between(1, 1024), metavar="N", what="int 1..1024"),
    Setting(name="write_threads", kind=INT, default=4,
            help="threads per worker for source writes (SQLite commits: one at a time per group, the writes "
            "that arrive meanwhile share the next), apart from the loads' threads so slow loaders never "
            "hold up a PUT", check=between(1, 1024), metavar="N", what="int 1..1024"),
    Setting(name="log_level", kind=STR, default="info", help="log level of the supervisor and its children",
            check=one_of(LOG_LEVELS, "log level"), metavar="LEVEL", what=" / ".join(LOG_LEVELS), choices=LOG_LEVELS),
    Setting(name="peer_connect_timeout", kind=NUMBER, default=DEFAULT_PEER_CONNECT_TIMEOUT,
            help="seconds to connect to a peer before falling back to loading locally",
            check=_positive, metavar="S", what="number > 0"),
    Setting(name="peer_read_timeout", kind=NUMBER, default=DEFAULT_PEER_READ_TIMEOUT,
            help="seconds a peer has to answer once connected before falling back to loading locally",
            check=_positive, metavar="S", what="number > 0"),
    Setting(name="handoff_window", kind=NUMBER, default=30.0,
            help="seconds after a ring change during which a miss for a key this host now owns first asks "
            "the key's previous owner's cache before loading from the source (0 = never)",
            check=_not_negative, metavar="S", what="number ≥ 0"),
    Setting(name="warmup_bytes", kind=SIZE, default=0,
            help="a host joining a ring asks each previous owner for its hottest entries of every group "
            "among the keys that move to it, up to this many value bytes per group, and stores them "
            "while it serves (a write during the warm-up wins); `0` = off: a moved key's first read "
            "asks its previous owner (`handoff_window`)", metavar="SIZE"),
    Setting(name="warmup_seconds", kind=NUMBER, default=10.0,
            help="the most seconds a warm-up runs after a join; what is not stored by then is left to "
            "the lazy handoff", check=_positive, metavar="S", what="number > 0"),
    Setting(name="breaker_failures", kind=INT, default=1,
            help="consecutive timeouts or refusals of a peer that open its circuit breaker: its keys are "
            "then served by local loads, without calling it, for a cooldown",
            check=between(1, 1000), metavar="N", what="int 1..1000"),
    Setting(name="breaker_cooldown", kind=NUMBER, default=1.0,
            help="seconds an open breaker routes around its peer before letting one probe call through; "
            "each failed probe doubles it, up to `breaker_max_cooldown`", check=_positive, metavar="S", what="number > 0"),
    Setting(name="breaker_max_cooldown", kind=NUMBER, default=30.0,
            help="seconds an open breaker's cooldown grows to at most", check=_positive, metavar="S",
            what="number ≥ `breaker_cooldown`"),
    Setting(name="hot_share", kind=NUMBER, default=0.125,
            help="share of each group's budget reserved, on top of it, for hot copies of keys other hosts "
            "own (groupcache: 1/8)", check=_share, metavar="F", what="number in (0, 1]"),
    Setting(name="hot_ttl", kind=NUMBER, default=60.0,
            help="seconds a hot copy lives at most (and at most the group's `ttl`), so a lost invalidation "
            "heals", check=_positive, metavar="S", what="number > 0"),
    Setting(name="hot_after", kind=INT, default=2,
            help="a key another host owns is kept as a hot copy from its Nth fetch from its owner "
            "among this worker's last 16k-32k fetched keys (1: at every fetch); a key read once here "
            "then costs no cache write and evicts no hot copy (groupcache keeps one fetch in ten)",
            check=between(1, 1000), metavar="N", what="int 1..1000"),
    Setting(name="lock_timeout", kind=NUMBER, default=1.0,
            help="seconds a worker's cache write waits for an arena shard lock held by another live "
            "process (stopped, say) before giving up: a load is then served uncached, a write "
            "answers 503 after writing its source; counted as `lock_timeouts`",
            check=_positive, metavar="S", what="number > 0"),
    Setting(name="flight_wait", kind=NUMBER, default=10.0,
            help="seconds a miss waits for another process of this host loading the same key before "
            "loading it itself", check=_positive, metavar="S", what="number > 0"),
    Setting(name="arena_shards", kind=INT, default=8,
            help="lock shards of the arena's data area (each with its own lock and lists)",
            check=between(1, 256), metavar="N", what="int 1..256"),
    Setting(name="process_rows", kind=INT, default=None,
            help="per-process stat rows in the arena: the most workers + registrar + retiring workers "
            "at once; SIGTTIN beyond it is refused", check=between(1, 4 * MAX_WORKERS), metavar="N",
            what=f"int 1..{4 * MAX_WORKERS}", shown=f"max({MIN_PROCESS_ROWS}, 2 × workers + 4)"),
    Setting(name="batch_max_keys", kind=INT, default=DEFAULT_BATCH_MAX_KEYS,
            help="keys one `POST /api/batch` (and one peer batch) may name; past it a 413",
            check=between(1, 100_000), metavar="N", what="int 1..100000"),
    Setting(name="batch_max_bytes", kind=SIZE, default=DEFAULT_BATCH_MAX_BYTES,
            help="bytes of one batch's request body, and of the values one batch get answers; past it a "
            "413 (at most 64MiB, what a peer accepts in one answer)",
            check=_check_batch_bytes, metavar="SIZE"),
    Setting(name="batch_inflight_bytes", kind=SIZE, default=DEFAULT_BATCH_INFLIGHT_BYTES,
            help="bytes the batches one worker is serving at once may hold (request bodies and the values "
            "answered, each batch counted at its bound); past it a batch gets a 503 with `Retry-After` "
            "(a batch is always admitted when none is in flight)", check=_positive, metavar="SIZE"),
    # -- logging (kept together: the log's format and the access log) --
    Setting(name="log_format", kind=STR, default="text",
            help="the log's format: text lines with ISO-8601 times, or one JSON object a line (time, "
            "level, pid, process, logger, message)", check=one_of(LOG_FORMATS, "log format"), metavar="FORMAT",
            what=" / ".join(LOG_FORMATS), choices=LOG_FORMATS),
    Setting(name="access_log", kind=BOOL, default=False,
            help="log every data-plane answer (client, request line, status, milliseconds) to logger "
            "`geecache.access`; off, it costs the hit path nothing"),
    Setting(name="access_log_sample", kind=NUMBER, default=1.0,
            help="share of answers the access log writes, chosen at random (with `access_log`)",
            check=_share, metavar="F", what="number in (0, 1]"),
)

GROUP_SETTINGS: tuple[Setting, ...] = (
    Setting(name="name", kind=STR, default=None,
            help="group name (in URLs and metric labels); the first group is the default for `/api`",
            check=_check_with(check_group_name), what="string, 1–64 of `A-Z a-z 0-9 _ . -`",
            shown="required", cli=False),
    Setting(name="max_bytes", kind=SIZE, default=None,
            help="cache budget of the group's own keys; a further `hot_share` of it is reserved for hot "
            "copies", shown="`min(64MiB, arena / (2 × number of groups))`", cli=False),
    Setting(name="policy", kind=STR, default="lru",
            help="eviction: CLOCK approximation of LRU, LRU-2 (scan-resistant), S3-FIFO (scan- and "
            "one-hit-resistant), S3-FIFO with a TinyLFU admission sketch (`s3lfu`: also keeps "
            "keys read in an earlier stay), or W-TinyLFU (`tinylfu`: a 1% window, admission by "
            "frequency; best on loops, scans and one-hit wonders, weak when popularity shifts), or "
            "`adaptive` (`tinylfu` whose admission level miniature simulations choose; hit ratios "
            "on six traces: `tests/perf/main.py policy`)",
            check=one_of(POLICIES, "policy"), what=" or ".join(f'`"{p}"`' for p in POLICIES), cli=False),
    Setting(name="ttl", kind=NUMBER, default=0.0,
            help="freshness bound of cached copies (0 = none): after it a copy is loaded again from the "
            "source; hot copies expire after `min(hot_ttl, ttl)` s. A write's `?ttl=` is different: "
            "the value's lifetime",
            check=_not_negative, what="number ≥ 0 (seconds)", cli=False),
    Setting(name="load_timeout", kind=NUMBER, default=DEFAULT_LOAD_TIMEOUT,
            help="seconds a load from the source may take; then the request gets a 504 and the host-wide "
            "flight is released, so a later request loads again", check=_positive,
            what="number > 0 (seconds)", cli=False),
    Setting(name="codec", kind=STR, default="none",
            help="values kept compressed in the arena and between hosts (compressed once, only when it saves ≥ 10 %); a gzip or zstd value passes through to a client that accepts it (`Content-Encoding`)",
            check=one_of(known_codecs, "codec"), what="`none`, `gzip`, `snappy`, `lz4`, `zstd`", cli=False),
    Setting(name="item_limit", kind=SIZE, default=None,
            help="largest value cached; a larger PUT gets 413, a larger value from the source is served "
            "but not cached", what="size ≤ `max_bytes`", shown="`min(1MiB, max_bytes)`", cli=False),
    Setting(name="sqlite", kind=STR, default=None,
            help="SQLite database (created if missing; its directory must exist); relative to the config "
            "file", what="path", shown="–", cli=False),
    Setting(name="table", kind=STR, default="kv",
            help="table (`key TEXT PRIMARY KEY, value BLOB`, plus `version`, `expire_at`, `deleted`, "
            "added in place to an older table) in `sqlite`; only with `sqlite`",
            what="SQL identifier", cli=False),
    Setting(name="synchronous", kind=STR, default="full",
            help="SQLite's `PRAGMA synchronous` for `sqlite`: `full` fsyncs every (group) commit, so an "
            "acknowledged write survives a power loss; `normal` fsyncs at checkpoints only: it survives "
            "a process crash, not a power loss", check=one_of(_sqlite_synchronous, "synchronous"),
            what="`full` or `normal`", cli=False),
    Setting(name="busy_timeout", kind=NUMBER, default=5.0,
            help="seconds a write to `sqlite` may wait for its commit (queued, for the host's write "
            "turn, for SQLite's lock); past it and a 1 s grace it answers 503, saying whether it may "
            "still have been applied (`X-Geecache-Maybe-Applied`). Also SQLite's own `busy_timeout`",
            check=_positive, what="number > 0 (seconds)", cli=False),
    Setting(name="loader", kind=STR, default=None,
            help="read-only source: `fn(key) -> bytes \\| str \\| None` (sync runs in a thread, or "
            "`async def`); `None` = not found. Imported at config time from `sys.path` (set "
            "`PYTHONPATH`)", what='`"module:function"`', shown="–", cli=False),
)

_HOST = {s.name: s for s in HOST_SETTINGS}

#: ``--help``'s sections, as gunicorn groups its settings: (title, the settings in it).
#: A host setting named in none of them is listed under the last, "other".
HELP_SECTIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("server", ("host", "port", "bind", "admin_host", "admin_port", "reuseport", "tls_cert", "tls_key",
                "tls_ca", "auth_token", "trusted_network", "data_dir")),
    ("workers", ("workers", "graceful_timeout", "worker_timeout", "load_threads", "write_threads")),
    ("cluster", ("etcd", "advertise", "lease_ttl", "peers", "peer_connect_timeout", "peer_read_timeout",
                 "handoff_window", "warmup_bytes", "warmup_seconds", "breaker_failures", "breaker_cooldown", "breaker_max_cooldown",
                 "max_clock_drift", "pause_threshold")),
    ("groups", ("arena", "arena_shards", "process_rows", "hot_share", "hot_ttl", "hot_after", "lock_timeout",
                "flight_wait")),
    ("limits", ("header_timeout", "keepalive_timeout", "max_connections", "batch_max_keys",
                "batch_max_bytes", "batch_inflight_bytes")),
    ("logging", ("log_level", "log_format", "access_log", "access_log_sample")),
)
_GROUP = {s.name: s for s in GROUP_SETTINGS}


def _fields(table: tuple[Setting, ...]) -> list[tuple[str, Any] | tuple[str, Any, Any]]:
    """The dataclass fields of a settings table (``make_dataclass``'s form): the required one
    (``name``) without a default, every other with its setting's default."""
    out: list[tuple[str, Any] | tuple[str, Any, Any]] = []
    for s in table:
        if s.name == "name":  # the one required field
            out.append((s.name, s.kind.type))
        else:
            out.append((s.name, s.kind.type, field(default_factory=s.make_default)))
    return out


def _named(self, name: str, like: str | None = None) -> str:
    """Setting *name* as the source that set it spelled it (``--arena``, ``GEECACHE_ARENA``,
    ``arena``); when it was defaulted, spelled as *like* is (a flag, a variable), else its key."""
    given = self.sources.get(name)
    if given is not None:
        return given
    setting = _HOST.get(name)
    if setting is not None and like is not None:
        if like.startswith("--"):
            return setting.flag
        if like.startswith("GEECACHE_"):
            return setting.env
    return name


def _item_limit(self) -> int:
    """The largest per-item limit of any group: the HTTP body size cap."""
    return max((g.item_limit for g in self.groups), default=DEFAULT_ITEM_LIMIT)


#: One ``[[groups]]`` entry: a named cache namespace and its single source.  ``max_bytes``
#: and ``item_limit`` are None until resolved; ``sqlite`` is absolute once loaded;
#: ``demo`` is True for the built-in demo group whose database the supervisor seeds.
GroupConfig = dataclasses.make_dataclass(
    "GroupConfig", _fields(GROUP_SETTINGS) + [("demo", bool, False)],
    namespace={"__doc__": "One ``[[groups]]`` entry: a named cache namespace and its single source "
                          "(one attribute per GROUP_SETTINGS row, plus ``demo``).",
               "__module__": __name__})

#: The whole host: one attribute per HOST_SETTINGS row, its groups, and the file it came from.
Config = dataclasses.make_dataclass(
    "Config", _fields(HOST_SETTINGS) + [
        ("groups", list, field(default_factory=list)),
        ("path", Path | None, None),
        # setting name -> the field as its source spelled it (`--port`, `GEECACHE_PORT`, `port`),
        # for each setting given rather than defaulted: conflicts name the source that set them.
        ("sources", dict, field(default_factory=dict, repr=False, compare=False)),
    ],
    namespace={"__doc__": "The whole host: one attribute per HOST_SETTINGS row, ``groups`` "
                          "(GroupConfig), ``path`` (the file it came from, if any) and ``sources`` "
                          "(which source set each given setting).",
               "item_limit": property(_item_limit), "named": _named, "__module__": __name__})


# -- reading -----------------------------------------------------------------


def _apply_host(cfg, key: str, value: Any, fname: str, text: bool = False) -> None:
    """Set one host-level setting on *cfg* after reading and checking it."""
    s = _HOST.get(key)
    if s is None:
        raise ConfigError(fname, f"unknown setting; known: {', '.join(sorted(_HOST))}")
    setattr(cfg, key, s.read(value, fname, text))
    cfg.sources[key] = fname


def _parse_group(raw: Any, index: int, base: Path):
    where = f"groups[{index}]"
    if not isinstance(raw, dict):
        raise ConfigError(where, "expected a table ([[groups]])")
    for key in raw:
        if key not in _GROUP:
            raise ConfigError(f"{where}.{key}", f"unknown field; known: {', '.join(sorted(_GROUP))}")
    if "name" not in raw:
        raise ConfigError(f"{where}.name", "is required")
    g = GroupConfig(**{key: _GROUP[key].read(value, f"{where}.{key}") for key, value in raw.items()})
    sources = [k for k in ("sqlite", "loader") if k in raw]
    if len(sources) != 1:
        found = " and ".join(sources) if sources else "none"
        raise ConfigError(where, f"needs exactly one source, sqlite or loader; found {found}")
    if g.sqlite is not None:
        path = Path(g.sqlite)
        path = path if path.is_absolute() else base / path
        if not path.parent.is_dir():
            raise ConfigError(f"{where}.sqlite", f"directory {str(path.parent)!r} does not exist")
        g.sqlite = str(path)
        check_sqlite(g.sqlite, g.table, where)
    else:
        for only in ("table", "synchronous", "busy_timeout"):
            if only in raw:
                raise ConfigError(f"{where}.{only}", "only applies to a sqlite source")
        check_loader(g.loader, f"{where}.loader")
    return g


def check_loader(spec: str, fname: str) -> None:
    """Import the loader now so a typo fails the config, not every worker."""
    from .storage import load_source

    with reported_as(fname):
        load_source(spec)


def check_sqlite(path: str, table: str, where: str) -> None:
    """Open the database once now (creating it if new) so a bad file or table fails the config."""
    from .storage import SQLiteStorage

    # SQLiteStorage names "table" or "storage"; we name the config field.
    with reported_as(lambda inner: f"{where}.{'table' if inner == 'table' else 'sqlite'}"):
        SQLiteStorage(path, table).close()


def load_file(path: str | os.PathLike, cfg=None):
    """Read a TOML config file into *cfg* (a fresh Config by default)."""
    cfg = cfg or Config()
    path = Path(path)
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except OSError as exc:
        raise ConfigError("config", f"cannot read {str(path)!r}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("config", f"{str(path)!r} is not valid TOML: {exc}") from None
    cfg.path = path
    for key, value in raw.items():
        if key == "groups":
            continue
        _apply_host(cfg, key, value, key)
    groups = raw.get("groups", [])
    if not isinstance(groups, list):
        raise ConfigError("groups", "expected an array of tables ([[groups]])")
    base = path.resolve().parent
    seen: set[str] = set()
    for i, raw_group in enumerate(groups):
        g = _parse_group(raw_group, i, base)
        if g.name in seen:
            raise ConfigError(f"groups[{i}].name", f"duplicate group name {g.name!r}")
        seen.add(g.name)
        cfg.groups.append(g)
    return cfg


#: The config file's environment variable (the file is named by a flag or here, never in itself).
CONFIG_ENV = "GEECACHE_CONFIG"


def plain(text: str) -> str:
    """*text* without the Markdown the reference table uses (code spans, bold, escaped bars)."""
    return text.replace("`", "").replace("**", "").replace("\\|", "|")


def _help(s: Setting) -> str:
    return plain(f"{s.help} (default {s.shown_default()}; env {s.env})")


def version_line() -> str:
    """What ``geecache --version`` prints: ``geecache 0.1.0 (CPython 3.11.7 on linux)``."""
    return (f"geecache {__version__} ({platform.python_implementation()} "
            f"{platform.python_version()} on {sys.platform})")


def build_parser() -> argparse.ArgumentParser:
    """The supervisor's command line: one flag per host setting, read as text like the environment."""
    p = argparse.ArgumentParser(
        # Not argv[0]: `python -m geecache` would show `__main__.py`.
        prog="geecache",
        description="Run one GeeCache host: a supervisor forking N HTTP workers over one "
        "shared-memory arena. With no config, serves the demo group 'scores' "
        "(try: curl 'http://127.0.0.1:8001/api?key=Tom'). Precedence: flag > environment "
        "> config file > default.",
    )
    p.add_argument("--version", action="version", version=version_line())
    p.add_argument("-c", "--config", metavar="FILE",
                   help=f"TOML config file (host settings and [[groups]]; env {CONFIG_ENV})")
    placed = {name for _, names in HELP_SECTIONS for name in names}
    sections = [*HELP_SECTIONS, ("other", tuple(s.name for s in HOST_SETTINGS if s.name not in placed))]
    for title, names in sections:
        if not names:
            continue
        group = p.add_argument_group(title)
        for name in names:
            s = _HOST[name]
            flags = (s.short, s.flag) if s.short else (s.flag,)
            if s.kind is BOOL:
                group.add_argument(*flags, action=argparse.BooleanOptionalAction, default=None, help=_help(s))
            elif s.choices:
                # Listed as argparse lists choices, but read like every other flag, so a wrong
                # one is a ``config error: --log-level: ...`` as from the environment or the file.
                group.add_argument(*flags, metavar="{" + ",".join(s.choices) + "}", help=_help(s))
            else:
                group.add_argument(*flags, metavar=s.metavar, help=_help(s))
    return p


def from_args(args: argparse.Namespace, environ: Mapping[str, str] | None = None):
    """Build and validate the Config: file, then environment, then flags, then checks across fields."""
    environ = os.environ if environ is None else environ
    path = args.config or environ.get(CONFIG_ENV)
    cfg = load_file(path) if path else Config()
    for s in HOST_SETTINGS:
        # An empty variable counts as unset, as a shell's `VAR= cmd` means.
        if environ.get(s.env):
            _apply_host(cfg, s.name, environ[s.env], s.env, text=True)
    for s in HOST_SETTINGS:
        value = getattr(args, s.name, None)
        if value is not None:
            _apply_host(cfg, s.name, value, s.flag, text=True)
    _finish(cfg)
    return cfg


def parse_args(argv: list[str] | None = None, environ: dict[str, str] | None = None):
    """Parse the command line (``--help`` and usage errors exit like argparse)."""
    return from_args(build_parser().parse_args(argv), environ)


def is_loopback(host: str) -> bool:
    """True when *host* is reachable only from this machine (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # every interface (""), or a name: assume it is reachable


def exposure(cfg) -> str:
    """How the data port is protected, for the log: token, loopback, or a trusted network."""
    if cfg.auth_token:
        return f"writes and the peer API need the auth_token (data port on {cfg.host or '*'})"
    if is_loopback(cfg.host):
        return f"no auth_token: the data port is on loopback ({cfg.host}) only"
    return (f"no auth_token and the data port is on {cfg.host or '*'}: trusted_network says every host "
            "that reaches it may write and call the peer API")


def _finish(cfg) -> None:
    """Checks that span fields, and the demo group when no group is configured."""
    named = cfg.named
    if (cfg.tls_cert is None) != (cfg.tls_key is None):
        given, missing = ("tls_cert", "tls_key") if cfg.tls_key is None else ("tls_key", "tls_cert")
        raise ConfigError(named(given), f"needs {named(missing, named(given))} too (a certificate and "
                                        "its key go together)")
    for name in ("tls_cert", "tls_key", "tls_ca"):
        value = getattr(cfg, name)
        if value is not None and not os.path.isfile(value):
            raise ConfigError(named(name), f"file {value!r} does not exist")
    if cfg.etcd and cfg.peers:
        raise ConfigError(named("peers"), f"conflicts with {named('etcd', named('peers'))}: use either etcd discovery or "
                                          "a static peer list, not both")
    if cfg.breaker_max_cooldown < cfg.breaker_cooldown:
        raise ConfigError(named("breaker_max_cooldown"), f"{cfg.breaker_max_cooldown:g} is below "
                          f"{named('breaker_cooldown', named('breaker_max_cooldown'))} ({cfg.breaker_cooldown:g})")
    if cfg.data_dir.exists() and not cfg.data_dir.is_dir():
        raise ConfigError(named("data_dir"), f"{str(cfg.data_dir)!r} is a file, not a directory")
    if cfg.bind is not None:
        where = cfg.sources.get("bind", "bind")
        spelled = [cfg.sources[name] for name in ("host", "port") if name in cfg.sources]
        if spelled:
            raise ConfigError(where, f"conflicts with {' and '.join(spelled)}: give either bind or "
                                     "host and port, not both")
        cfg.host, cfg.port = parse_bind(cfg.bind, where)
    if not cfg.auth_token and not cfg.trusted_network and not is_loopback(cfg.host):
        where = cfg.sources.get("bind") or cfg.sources.get("host", "host")
        raise ConfigError(where, f"{cfg.host or '*'} is reachable from other machines and no auth_token is "
                                 "set: anyone who reaches the data port could write and call the peer API; "
                                 "set auth_token, or trusted_network if only trusted hosts reach it")
    if cfg.admin_port is None:
        cfg.admin_port = cfg.port + ADMIN_PORT_OFFSET if cfg.port else 0
        if cfg.admin_port > 65535:
            raise ConfigError(named("admin_port", named("port")), f"the default ({named('port')} + {ADMIN_PORT_OFFSET}) "
                                                   "is past 65535; give one")
    if cfg.admin_port and cfg.admin_port == cfg.port:
        raise ConfigError(named("admin_port"), f"{cfg.admin_port} is the data port "
                                               f"({named('port', named('admin_port'))}) too; "
                                               "give another")
    if cfg.process_rows is None:
        cfg.process_rows = default_process_rows(cfg.workers)
    needed = cfg.workers + (1 if cfg.etcd else 0)
    if needed > cfg.process_rows:
        raise ConfigError(named("workers"), (
            f"{cfg.workers} workers{' and the registrar' if cfg.etcd else ''} need {needed} of the "
            f"arena's per-process stat rows; {named('process_rows', named('workers'))} is {cfg.process_rows}: raise it "
            "or lower the workers"))
    if not cfg.groups:
        cfg.groups.append(GroupConfig(
            name=DEMO_GROUP, sqlite=str(cfg.data_dir / "demo.db"), demo=True))
    for i, g in enumerate(cfg.groups):
        if g.max_bytes is None:
            # Groups without a budget share half the arena (the rest: hot copies, slot tables).
            g.max_bytes = min(DEFAULT_GROUP_BYTES, cfg.arena // (2 * len(cfg.groups)))
        if g.item_limit is None:
            g.item_limit = min(DEFAULT_ITEM_LIMIT, g.max_bytes)
        if g.max_bytes > cfg.arena:
            raise ConfigError(f"groups[{i}].max_bytes",
                              f"{format_size(g.max_bytes)} exceeds the arena ({format_size(cfg.arena)})")
        if g.item_limit > g.max_bytes:
            raise ConfigError(f"groups[{i}].item_limit",
                              f"{format_size(g.item_limit)} exceeds max_bytes ({format_size(g.max_bytes)})")


# -- the reference -----------------------------------------------------------


def reference_table(table: tuple[Setting, ...]) -> str:
    """The settings of *table* as the Markdown table docs/operations.md shows."""
    if table is HOST_SETTINGS:
        rows = ["| flag | environment | TOML key | type | default | meaning |", "|---|---|---|---|---|---|",
                f"| `-c`, `--config FILE` | `{CONFIG_ENV}` | – | path | none | TOML file with host keys and "
                "`[[groups]]` |"]
        for s in table:
            flag = f"`{s.flag}` / `--no-{s.flag[2:]}`" if s.kind is BOOL else f"`{s.flag} {s.metavar}`"
            if s.short:
                flag = f"`{s.short}`, {flag}"
            rows.append(f"| {flag} | `{s.env}` | `{s.name}` | {s.what or s.kind.what} | "
                        f"{_cell(s)} | {s.help} |")
    else:
        rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
        rows += [f"| `{s.name}` | {s.what or s.kind.what} | {_cell(s)} | {s.help} |" for s in table]
    return "\n".join(rows) + "\n"


def _cell(s: Setting) -> str:
    """A literal default in code font; a computed or absent one as prose."""
    literal = not isinstance(s.default, Computed) and s.default not in (None, [])
    return f"`{s.shown_default()}`" if literal else s.shown_default()
