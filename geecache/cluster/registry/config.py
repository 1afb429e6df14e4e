"""Names and addresses for registration: the key layout, endpoint parsing.

Pure string work with no etcd client behind it, so the supervisor can
validate its configuration before it forks anything.
"""

from __future__ import annotations

from typing import Iterable
from urllib.parse import urlsplit

from geecache.errors import ConfigError

#: Every host's key lives under this prefix; the watch covers exactly it.
REGISTRY_PREFIX = "/geecache/registry/"

#: etcd's client port when an endpoint names none.
DEFAULT_ETCD_PORT = 2379


def parse_endpoints(spec: str | Iterable[str]) -> list[tuple[str, int]]:
    """Parse etcd endpoints into (host, port) pairs, in the given order.

    Accepts a comma-separated string or a list of strings; each item is
    `host`, `host:port`, `http://host:port` or `[v6addr]:port`. TLS (`https`)
    is not supported, and saying so beats connecting in clear text to a
    server that expects TLS. Raises ConfigError("etcd", reason) on bad input.
    """
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    if not items or all(not str(i).strip() for i in items):
        raise ConfigError("etcd", "no endpoints given")
    out: list[tuple[str, int]] = []
    for raw in items:
        item = str(raw).strip()
        if not item:
            raise ConfigError("etcd", f"empty endpoint in {spec!r}")
        url = item if "://" in item else "http://" + item
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as e:
            raise ConfigError("etcd", f"bad endpoint {item!r}: {e}") from None
        if parts.scheme != "http":
            raise ConfigError("etcd", f"bad endpoint {item!r}: only http:// is supported")
        if not parts.hostname:
            raise ConfigError("etcd", f"bad endpoint {item!r}: no host")
        if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
            raise ConfigError("etcd", f"bad endpoint {item!r}: expected [http://]host[:port]")
        if port == 0:
            raise ConfigError("etcd", f"bad endpoint {item!r}: port 0")
        out.append((parts.hostname, port if port is not None else DEFAULT_ETCD_PORT))
    return out


def validate_advertise(advertise: str) -> str:
    """Check the address this host advertises to its peers and return it.

    `host:port` or a URL (`http://host:port`); it becomes the etcd key suffix
    and the member name every host puts in its ring, so it must be identical
    on all hosts for one host and must not be empty or contain whitespace.
    """
    if not isinstance(advertise, str) or not advertise:
        raise ConfigError("advertise", "empty address")
    if any(c.isspace() for c in advertise) or not advertise.isprintable():
        raise ConfigError("advertise", f"{advertise!r} contains whitespace or control characters")
    try:
        # Parsed as the peer picker's peer_url makes it a URL; not imported from
        # there, so that validating a config never loads the peer protocol.
        parts = urlsplit(advertise if "://" in advertise else "http://" + advertise)
        parts.port
    except ValueError as e:
        raise ConfigError("advertise", f"bad address {advertise!r}: {e}") from None
    if not parts.hostname:
        raise ConfigError("advertise", f"bad address {advertise!r}: no host")
    return advertise


def registry_key(advertise: str, prefix: str = REGISTRY_PREFIX) -> str:
    """The etcd key a host registers under: the prefix plus its advertise address."""
    return prefix + advertise
