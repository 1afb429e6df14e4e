"""Key and value limits and naming rules shared by the library, the config, the arena and HTTP.

The one place that says what a group name, a partition name and a policy
name may be, so the config check, ``Group`` and the caches agree.
"""

import re

from .errors import InvalidKeyError, ValueTooLargeError

#: memcached's key limit, in bytes of UTF-8.
MAX_KEY_BYTES = 250
#: Default per-item value limit (memcached's default slab page).
DEFAULT_ITEM_LIMIT = 1 << 20


def check_key(key: str) -> bytes:
    """Validate *key* and return its UTF-8 bytes; raise InvalidKeyError otherwise."""
    if not isinstance(key, str):
        raise InvalidKeyError(f"key must be a str, got {type(key).__name__}")
    if not key:
        raise InvalidKeyError("key must not be empty")
    try:
        raw = key.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidKeyError(f"key is not valid UTF-8: {exc.reason}") from None
    if len(raw) > MAX_KEY_BYTES:
        raise InvalidKeyError(f"key is {len(raw)} bytes; the limit is {MAX_KEY_BYTES}")
    return raw


#: The longest TTL a write may ask for (memcached caps relative exptimes at 30 days).
MAX_TTL = 30 * 24 * 3600.0


def check_ttl(ttl) -> float:
    """A write's TTL in seconds (0 = the group's own TTL); InvalidKeyError when out of range."""
    try:
        ttl = float(ttl)
    except (TypeError, ValueError):
        raise InvalidKeyError(f"ttl must be a number of seconds, got {ttl!r}") from None
    if not 0 <= ttl <= MAX_TTL:  # also refuses NaN
        raise InvalidKeyError(f"ttl must be between 0 and {MAX_TTL:g} seconds, got {ttl!r}")
    return ttl


def as_bytes(value: object) -> bytes:
    """*value* as bytes: bytes-like copied to bytes, str encoded as UTF-8; else TypeError."""
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"value must be bytes or str, got {type(value).__name__}")


def check_value(value: bytes, limit: int = DEFAULT_ITEM_LIMIT) -> bytes:
    """Validate a value's type and size against *limit*; return it as bytes."""
    value = as_bytes(value)
    if len(value) > limit:
        raise ValueTooLargeError(f"value is {len(value)} bytes; the item limit is {limit}")
    return value


#: Eviction policies every cache implements (the arena maps them to ids in its layout).
POLICIES = ("lru", "lru2", "s3fifo", "s3lfu", "tinylfu", "adaptive")

# Group names travel in URLs (/_geecache/<group>/<key>) and metric labels.
_GROUP_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}\Z")
#: Prefix of the partition holding a group's hot copies; ':' is not allowed in
#: group names, so a hot partition never collides with a group.
HOT_PREFIX = "hot:"


def check_group_name(name: str) -> str:
    """Validate a group name (letters, digits, ``_ . -``; 1-64 chars)."""
    if not isinstance(name, str) or not _GROUP_NAME.match(name):
        raise InvalidKeyError("a group name must be 1-64 of A-Z a-z 0-9 _ . -")
    return name


def hot_group_name(name: str) -> str:
    """The cache partition holding hot copies of *name*'s remote keys."""
    return HOT_PREFIX + name


def check_policy(policy: str) -> str:
    """Validate an eviction policy name; ValueError naming the known ones otherwise."""
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}; known: {', '.join(POLICIES)}")
    return policy
