"""How a Group finds the host that owns a key, and talks to it.

groupcache's PeerPicker/ProtoGetter pair: ``pick`` answers "who owns this
key?" (None: this host does), and a ``Peer`` fetches from, writes to and
invalidates on that host.  ``NoPeers`` is the single-host picker.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Protocol

from geecache.cluster.consistenthash import Ring

if TYPE_CHECKING:
    from geecache.storage import WriteResult
    from geecache.writelog import WriteLog

#: The ring of a host alone (no members: whoever asks routes to any host).
_EMPTY_RING = Ring()

#: Writes one peer request carries at most (the default ``batch_max_keys``): more
#: for one owner go in several requests.
PEER_WRITE_BATCH = 1000


class Peer(Protocol):
    """Another host of the cluster, reached over the peer protocol (``geecache.cluster.httppeer.HTTPPeer``)."""

    address: str

    async def fetch(self, group: str, key: str, max_size: int, *, handoff: bool = False
                    ) -> tuple[bytes, float]:
        """(value, expire_at or 0) from the owner; NotFoundError, or PeerError when unreachable.

        *max_size* bounds the decompressed value (the group's item limit).
        *handoff*: ask a previous owner, which answers only from its cache
        (NotFoundError otherwise) and never loads.
        """

    async def fetch_packed(self, group: str, key: str, max_size: int, *, handoff: bool = False
                           ) -> tuple[bytes, int, float]:
        """``fetch`` as the owner sent it: (bytes, codec id, expire_at or 0), not decompressed.

        The codec id is a known one (an unknown one is a PeerError), so a
        group that keeps values compressed stores the bytes as received.
        """

    def fetch_packed_soon(self, group: str, key: str, done: Callable[[object], None], *,
                          handoff: bool = False) -> None:
        """``fetch_packed`` by callbacks, with no task: *done* gets ``(bytes, codec id, expire_at)``
        or the exception (NotFoundError, PeerError), once, from a callback of the loop."""

    async def write(self, group: str, key: str, value: bytes | None, ttl: float = 0, *,
                    version: int = 0) -> "WriteResult":
        """Ask the owner to apply a versioned write (*value* None: delete); its WriteResult.

        PeerError when unreachable (PeerUnavailableError: its breaker is open, no call made).
        """

    async def write_many(self, group: str, writes: list[tuple[str, bytes | None, float, int]]
                         ) -> list["WriteResult | None"]:
        """Every ``(key, value or None, ttl, version)`` in one request; an answer per write (None:
        the owner failed it, and the caller writes it as after a failed ``write``), PeerError
        when unreachable."""

    async def fetch_many(self, group: str, keys: list[str], max_size: int) -> dict[str, tuple[int, bytes, float]]:
        """key -> (status 200/404/error status, value, expire_at) from the owner in one request;
        PeerError when unreachable."""

    async def set(self, group: str, key: str, value: bytes, ttl: float = 0) -> None:
        """Ask the owner to write through and cache (*ttl* 0: the group's); PeerError when unreachable."""

    async def delete(self, group: str, key: str) -> bool:
        """Ask the owner to delete from source and cache; PeerError when unreachable."""

    async def invalidate(self, group: str, keys: list[str]) -> None:
        """Tell this member to drop its copies of *keys*; PeerError when unreachable."""


class PeerPicker(Protocol):
    """Maps keys to owners over the current member list (``geecache.cluster.pool.HTTPPool``)."""

    #: Whether members are reached over https (a member's URL is ``peer_url(member, tls)``).
    tls: bool
    #: The host's shared log of the writes it applied (``geecache.writelog``), which hosts
    #: that were away ask for; None when nothing keeps one (a host alone).
    write_log: "WriteLog | None"
    #: True when there is never another member to tell of a write (``NoPeers``).
    alone: bool

    def pick(self, key: str) -> Peer | None:
        """The owning peer of *key*, or None when this host owns it."""

    def owns(self, keys: list[str]) -> list[bool]:
        """For each of *keys*, whether ``pick`` names no peer for it (this host owns it)."""

    def owned_vnodes(self) -> tuple[bytes, bytes]:
        """``owns`` as a table: the ring's vnode hashes (ascending, native u64 bytes) and a
        byte per vnode, 1 where ``owns`` is True of the keys of its arc; both empty when
        this host owns every key.  For the compiled peer batch (``HitPath.peer_hits``)."""

    def handoff_peer(self, key: str) -> Peer | None:
        """For a key this host owns: its owner before the last ring change, while that change
        is recent (``handoff_window``), when that is another member; else None."""

    def ring(self) -> "tuple[int, Ring]":
        """(member list version, the ring built from it) this host routes by now."""

    def note_cold(self, address: str, group: str) -> None:
        """Previous owner *address* said it holds nothing of *group*: skip its handoff asks a while."""

    def is_cold(self, address: str, group: str) -> bool:
        """True while *address*'s word that it holds nothing of *group* stands (``note_cold``)."""

    def holds_nothing_for(self, group: str, asker: str) -> bool:
        """True when this host holds no entry of *group* that moved from it to member *asker*
        (it cached nothing of *group* when its ring last changed to name *asker*)."""

    async def invalidate(self, group: str, keys: list[str]) -> int:
        """Tell every other member to drop hot copies of *keys* (best effort, bounded).

        Returns how many peers' circuit breakers that opened.
        """


class NoPeers:
    """The picker of a host alone: it owns every key."""

    tls = False
    write_log: "WriteLog | None" = None
    #: No other member, ever: ``invalidate`` has nobody to tell (``Group.finish_set`` skips it).
    alone = True

    def pick(self, key: str) -> None:
        return None

    def owns(self, keys: list[str]) -> list[bool]:
        """All of them: a host alone owns every key."""
        return [True] * len(keys)

    def owned_vnodes(self) -> tuple[bytes, bytes]:
        """Empty: a host alone owns every key."""
        return b"", b""

    def handoff_peer(self, key: str) -> None:
        """None: a host alone has no previous owner to ask."""
        return None

    def ring(self) -> "tuple[int, Ring]":
        """Version 0 and an empty ring: a client that follows the ring asks any host."""
        return 0, _EMPTY_RING

    def note_cold(self, address: str, group: str) -> None:
        """Nothing to note: a host alone asks no previous owner."""

    def is_cold(self, address: str, group: str) -> bool:
        """False: a host alone has no previous owner to skip."""
        return False

    def holds_nothing_for(self, group: str, asker: str) -> bool:
        """False: no member ever asks a host alone."""
        return False

    async def invalidate(self, group: str, keys: list[str]) -> int:
        """0: there is nobody to tell, so no breaker opens."""
        return 0
