"""Host configuration: the TOML file, the command line, and their validation.

Everything the supervisor needs is parsed and checked here, in the
supervisor, before anything forks: a bad config must end the program with
one message naming the field (``groups[1].max_bytes: ...``), never with a
worker crash loop.  Command-line flags override file values.

File shape (every key optional; with no ``[[groups]]`` the demo group
``scores`` is served from an embedded SQLite database in the data dir)::

    host = "127.0.0.1"
    port = 8001
    workers = 4
    arena = "256MiB"
    data_dir = "/var/lib/geecache"
    auth_token = "secret"
    etcd = ["http://127.0.0.1:2379"]
    advertise = "10.0.0.5:8001"
    lease_ttl = 10
    peers = ["http://10.0.0.6:8001"]
    graceful_timeout = 10

    [[groups]]
    name = "scores"
    max_bytes = "64MiB"
    policy = "lru"          # or "lru2"
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
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .cache import POLICIES
from .errors import ConfigError, InvalidKeyError
from .group import check_group_name
from .limits import DEFAULT_ITEM_LIMIT
from .registry.config import parse_endpoints, validate_advertise

#: Eviction policies the arena implements.

DEFAULT_PORT = 8001
DEFAULT_ARENA = 256 << 20
DEFAULT_GROUP_BYTES = 64 << 20
DEFAULT_LEASE_TTL = 10
MIN_LEASE_TTL = 2
DEFAULT_GRACEFUL_TIMEOUT = 10.0
DEMO_GROUP = "scores"
#: The demo database's rows: the classic GeeCache example.
DEMO_ROWS = {"Tom": b"630", "Jack": b"589", "Sam": b"567"}

# Group names travel in URLs (/_geecache/<group>/<key>) and metric labels.
# A table name is spliced into SQL, so only plain identifiers pass.

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


@dataclass
class GroupConfig:
    """One ``[[groups]]`` entry: a named cache namespace and its single source."""

    name: str
    #: None until resolved: 64MiB, or an equal share of half the arena when that is smaller.
    max_bytes: int | None = None
    policy: str = "lru"
    ttl: float = 0
    codec: str = "none"
    #: None until resolved: 1MiB, or max_bytes when that is smaller.
    item_limit: int | None = None
    #: Path of the SQLite database (absolute once loaded), or None.
    sqlite: str | None = None
    table: str = "kv"
    #: ``module:function`` of a loader, or None.
    loader: str | None = None
    #: True for the built-in demo group whose database the supervisor seeds.
    demo: bool = False


@dataclass
class Config:
    """The whole host: where to listen, how many workers, the arena, the groups."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    arena: int = DEFAULT_ARENA
    data_dir: Path = field(default_factory=default_data_dir)
    auth_token: str | None = None
    etcd: list[str] = field(default_factory=list)
    advertise: str | None = None
    lease_ttl: int = DEFAULT_LEASE_TTL
    peers: list[str] = field(default_factory=list)
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_ca: str | None = None
    #: One SO_REUSEPORT socket per worker instead of one shared socket.
    reuseport: bool = False
    #: Seconds in-flight requests get to finish after SIGTERM.
    graceful_timeout: float = DEFAULT_GRACEFUL_TIMEOUT
    groups: list[GroupConfig] = field(default_factory=list)
    #: The file this came from, if any.
    path: Path | None = None

    @property
    def item_limit(self) -> int:
        """The largest per-item limit of any group: the HTTP body size cap."""
        return max((g.item_limit for g in self.groups), default=DEFAULT_ITEM_LIMIT)


_HOST_KEYS = {f.name for f in dataclasses.fields(Config)} - {"groups", "path"}
_GROUP_KEYS = {f.name for f in dataclasses.fields(GroupConfig)} - {"demo"}


def _typed(value: Any, types: type | tuple[type, ...], fname: str, what: str) -> Any:
    if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise ConfigError(fname, f"expected {what}, got {value!r}")
    if not isinstance(value, types):
        raise ConfigError(fname, f"expected {what}, got {type(value).__name__} {value!r}")
    return value


def _str_list(value: Any, fname: str) -> list[str]:
    """A list from a TOML array or a comma-separated string."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise ConfigError(fname, f"expected a list of strings or a comma-separated string, got {value!r}")


def _check_url(url: str, fname: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(fname, f"{url!r} is not an http(s)://host:port URL")
    try:
        parts.port
    except ValueError:
        raise ConfigError(fname, f"{url!r} has an invalid port") from None
    return url.rstrip("/")


def _reraise(check, value: Any, fname: str) -> Any:
    """Run another module's validator, naming our field in its ConfigError."""
    try:
        check(value)
    except ConfigError as exc:
        raise ConfigError(fname, exc.reason) from None
    return value


def _apply_host(cfg: Config, key: str, value: Any, fname: str) -> None:
    """Set one host-level setting on *cfg* after checking its type and range."""
    if key in ("host", "auth_token", "tls_cert", "tls_key", "tls_ca", "advertise"):
        value = _typed(value, str, fname, "a string")
        if key == "advertise":
            value = _reraise(validate_advertise, value, fname)
        if key == "auth_token" and not value:
            raise ConfigError(fname, "must not be empty")
    elif key == "port":
        value = _typed(value, int, fname, "an integer")
        if not 0 <= value < 65536:
            raise ConfigError(fname, f"{value} is not a TCP port")
    elif key == "workers":
        value = _typed(value, int, fname, "an integer")
        if not 1 <= value <= 1024:
            raise ConfigError(fname, f"must be between 1 and 1024, got {value}")
    elif key == "arena":
        value = parse_size(value, fname)
    elif key == "data_dir":
        value = Path(_typed(value, str, fname, "a path"))
    elif key == "etcd":
        value = _str_list(value, fname)
        _reraise(parse_endpoints, value, fname)
    elif key == "peers":
        value = [_check_url(u, fname) for u in _str_list(value, fname)]
    elif key == "lease_ttl":
        # etcd leases are whole seconds.
        value = _typed(value, int, fname, "an integer of seconds")
        if value < MIN_LEASE_TTL:
            raise ConfigError(fname, f"must be at least {MIN_LEASE_TTL} seconds, got {value}")
    elif key == "graceful_timeout":
        value = _typed(value, (int, float), fname, "a number of seconds")
        if value < 0:
            raise ConfigError(fname, f"must not be negative, got {value}")
    elif key == "reuseport":
        value = _typed(value, bool, fname, "true or false")
    else:
        raise ConfigError(fname, f"unknown setting; known: {', '.join(sorted(_HOST_KEYS))}")
    setattr(cfg, key, value)


def _parse_group(raw: Any, index: int, base: Path) -> GroupConfig:
    where = f"groups[{index}]"
    if not isinstance(raw, dict):
        raise ConfigError(where, "expected a table ([[groups]])")
    for key in raw:
        if key not in _GROUP_KEYS:
            raise ConfigError(f"{where}.{key}", f"unknown field; known: {', '.join(sorted(_GROUP_KEYS))}")
    if "name" not in raw:
        raise ConfigError(f"{where}.name", "is required")
    name = _typed(raw["name"], str, f"{where}.name", "a string")
    try:
        check_group_name(name)
    except InvalidKeyError as exc:
        raise ConfigError(f"{where}.name", str(exc)) from None
    g = GroupConfig(name=name)
    if "max_bytes" in raw:
        g.max_bytes = parse_size(raw["max_bytes"], f"{where}.max_bytes")
    if "item_limit" in raw:
        g.item_limit = parse_size(raw["item_limit"], f"{where}.item_limit")
    if "policy" in raw:
        g.policy = _typed(raw["policy"], str, f"{where}.policy", "a string")
        if g.policy not in POLICIES:
            raise ConfigError(f"{where}.policy", f"unknown policy {g.policy!r}; known: {', '.join(POLICIES)}")
    if "ttl" in raw:
        g.ttl = _typed(raw["ttl"], (int, float), f"{where}.ttl", "a number of seconds")
        if g.ttl < 0:
            raise ConfigError(f"{where}.ttl", f"must not be negative, got {g.ttl}")
    if "codec" in raw:
        g.codec = _typed(raw["codec"], str, f"{where}.codec", "a string")
        codecs = known_codecs()
        if g.codec not in codecs:
            raise ConfigError(f"{where}.codec", f"unknown codec {g.codec!r}; known: {', '.join(codecs)}")
    sources = [k for k in ("sqlite", "loader") if k in raw]
    if len(sources) != 1:
        found = " and ".join(sources) if sources else "none"
        raise ConfigError(where, f"needs exactly one source, sqlite or loader; found {found}")
    if "sqlite" in raw:
        path = Path(_typed(raw["sqlite"], str, f"{where}.sqlite", "a path"))
        path = path if path.is_absolute() else base / path
        if not path.parent.is_dir():
            raise ConfigError(f"{where}.sqlite", f"directory {str(path.parent)!r} does not exist")
        g.sqlite = str(path)
        if "table" in raw:
            g.table = _typed(raw["table"], str, f"{where}.table", "a string")
        check_sqlite(g.sqlite, g.table, where)
    else:
        if "table" in raw:
            raise ConfigError(f"{where}.table", "only applies to a sqlite source")
        g.loader = _typed(raw["loader"], str, f"{where}.loader", "a string like module:function")
        check_loader(g.loader, f"{where}.loader")
    return g


def check_loader(spec: str, fname: str) -> None:
    """Import the loader now so a typo fails the config, not every worker."""
    from .storage import load_source

    try:
        load_source(spec)
    except ConfigError as exc:
        raise ConfigError(fname, exc.reason) from None


def check_sqlite(path: str, table: str, where: str) -> None:
    """Open the database once now (creating it if new) so a bad file or table fails the config."""
    from .storage import SQLiteStorage

    try:
        SQLiteStorage(path, table).close()
    except ConfigError as exc:  # SQLiteStorage names "table" or "storage"; we name the config field
        field = "table" if exc.field == "table" else "sqlite"
        raise ConfigError(f"{where}.{field}", exc.reason) from None


def load_file(path: str | os.PathLike, cfg: Config | None = None) -> Config:
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


def build_parser() -> argparse.ArgumentParser:
    """The supervisor's command line; every flag overrides the config file."""
    p = argparse.ArgumentParser(
        prog="supervisor.py",
        description="Run one GeeCache host: a supervisor forking N HTTP workers over one "
        "shared-memory arena. With no config, serves the demo group 'scores' "
        "(try: curl 'http://127.0.0.1:8001/api?key=Tom').",
    )
    a = p.add_argument
    a("--config", metavar="FILE", help="TOML config file (host settings and [[groups]])")
    a("--workers", type=int, metavar="N", help="worker processes (default: CPU count)")
    a("--host", help="address to bind (default 127.0.0.1)")
    a("--port", type=int, help=f"TCP port (default {DEFAULT_PORT}; 0 picks a free one)")
    a("--arena", metavar="SIZE", help="shared-memory arena size, e.g. 256MiB (default)")
    a("--data-dir", metavar="DIR",
      help="where the demo database lives (default $XDG_DATA_HOME/geecache, else ./geecache-data)")
    a("--auth-token", metavar="T",
      help="require 'Authorization: Bearer T' for PUT/DELETE (or env GEECACHE_AUTH_TOKEN)")
    a("--etcd", metavar="URL[,URL]", help="etcd endpoints; enables registration and discovery")
    a("--advertise", metavar="HOST:PORT", help="address other hosts reach this one at")
    a("--lease-ttl", type=int, metavar="SECONDS",
      help=f"etcd lease TTL (default {DEFAULT_LEASE_TTL}, min {MIN_LEASE_TTL})")
    a("--peers", metavar="URL,...", help="static peer list instead of etcd")
    a("--tls-cert", metavar="FILE", help="TLS certificate (PEM) for the HTTP port")
    a("--tls-key", metavar="FILE", help="TLS private key (PEM)")
    a("--tls-ca", metavar="FILE", help="CA bundle to verify peers")
    a("--reuseport", action=argparse.BooleanOptionalAction, default=None,
      help="one SO_REUSEPORT socket per worker instead of one shared socket")
    a("--graceful-timeout", type=float, metavar="SECONDS",
      help=f"time in-flight requests get after SIGTERM (default {DEFAULT_GRACEFUL_TIMEOUT:g})")
    return p


def from_args(args: argparse.Namespace, environ: dict[str, str] | None = None) -> Config:
    """Build and validate the Config: file first, then flags, then checks across fields."""
    environ = os.environ if environ is None else environ
    cfg = load_file(args.config) if args.config else Config()
    flag_fields = ("host", "port", "workers", "arena", "data_dir", "auth_token", "etcd",
                   "advertise", "lease_ttl", "peers", "tls_cert", "tls_key", "tls_ca",
                   "reuseport", "graceful_timeout")
    for name in flag_fields:
        value = getattr(args, name, None)
        if value is not None:
            _apply_host(cfg, name, value, "--" + name.replace("_", "-"))
    if cfg.auth_token is None and environ.get("GEECACHE_AUTH_TOKEN"):
        cfg.auth_token = environ["GEECACHE_AUTH_TOKEN"]
    _finish(cfg)
    return cfg


def parse_args(argv: list[str] | None = None, environ: dict[str, str] | None = None) -> Config:
    """Parse the command line (``--help`` and usage errors exit like argparse)."""
    return from_args(build_parser().parse_args(argv), environ)


def _finish(cfg: Config) -> None:
    """Checks that span fields, and the demo group when no group is configured."""
    if (cfg.tls_cert is None) != (cfg.tls_key is None):
        raise ConfigError("tls_key" if cfg.tls_key is None else "tls_cert",
                          "tls_cert and tls_key go together")
    for name in ("tls_cert", "tls_key", "tls_ca"):
        value = getattr(cfg, name)
        if value is not None and not os.path.isfile(value):
            raise ConfigError(name, f"file {value!r} does not exist")
    if cfg.etcd and cfg.peers:
        raise ConfigError("peers", "use either etcd discovery or a static peer list, not both")
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
