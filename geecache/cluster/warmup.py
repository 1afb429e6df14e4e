"""A joining host arrives warm: it asks the previous owners for their hottest entries of its keys.

Without it a ring change is handled lazily: a moved key's first read asks
its previous owner's cache (``handoff_window``), one peer hop per key.  With
``warmup_bytes`` set, a host that enters a ring with others (``HTTPPool``'s
``on_moved_here``) asks every previous owner once, in the background while it
serves, for its hottest entries among the keys that now hash to it
(``POST /_geecache/<group>/_warm``, a ``WarmRequest`` naming the asker's
member list); the owner scans its arena by the eviction policy's own state
(``Arena.hottest``), bounded by bytes and time, and answers a
``WarmResponse``.  One worker of the host does it (the winner of a host-wide
flight slot), the others skip.

A warmed entry must never be older than a write the cluster acknowledged
(invariant 7), so the warm-up reuses what guards every other copy:

- **writes applied here** meet the host-wide flight: each key's slot is
  claimed before the checks below and released after the store, and a write
  that lands meanwhile waits for it and stores its value again
  (``Group.apply_writes``); a key that has an entry here already (loaded or
  written since the join) is never overwritten;
- **writes applied elsewhere** are in their host's log of recent writes
  (``geecache.writelog``, appended before the write is acknowledged and before
  its invalidations go out): after claiming a chunk's keys, and again after
  the last store, every member is asked which keys it wrote since the
  warm-up began (plus ``pauseguard.MARGIN`` for invalidations still on the
  wire); those are not stored, or dropped again (``warm_drops``).  When a
  member cannot say (unreachable, its log younger than the window, or gone
  from the ring), nothing more is stored and everything warmed is dropped;
- an owner that is itself **unsure** (``pauseguard.unsure_now``, a warm
  restart not yet settled, a ring of itself alone) sends nothing;
- every entry keeps its **absolute expiry**: it travels as the seconds it has
  left (``BatchItem.ttl_left``) and expires by this host's clock no later than
  by the owner's (invariant 10).

An owner that holds nothing of the group says ``cold``: the asker then skips
its handoff asks for ``COLD_FOR`` seconds (``HTTPPool.note_cold``), as it does
when a handoff 404 says the same, so a cluster booting together does not pay
a peer hop per miss for nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time

from google.protobuf.message import DecodeError

from geecache.cluster.consistenthash import Ring
from geecache.errors import CodecError, GeeCacheError, InvalidKeyError, PeerError
from geecache.geecachepb import WarmRequest, WarmResponse
from geecache.lifetimes import local_expiry, seconds_left
from geecache.limits import hot_group_name
from geecache.cluster.pauseguard import MARGIN, unsure_now

log = logging.getLogger(__name__)

#: The most value bytes one warm-up answer carries (a peer reads at most 64 MiB in one answer).
MAX_ANSWER_BYTES = 32 << 20
#: The most seconds an owner scans for one warm-up ask: the scan runs on its event loop.
MAX_SCAN_SECONDS = 0.25
#: The most members a warm-up ask may name (the ring region holds about 4,000).
MAX_MEMBERS = 10_000
#: Keys whose flight slots are held at once while their chunk is checked and stored (the
#: arena's flight table has 512 by default; loads need the rest).
CHUNK = 128
#: The flight "key" of the host's one warm-up per group, in the hot partition's flight (no
#: user load takes that partition's flight, so it never meets a key's).
_ELECTION_KEY = "warm-up"


def serve_warm(group, body: bytes) -> bytes:
    """A previous owner's answer to a warm-up ask for *group* (``WarmRequest`` *body*).

    Unsure: nothing.  Holding nothing: ``cold``.  Else the owned entries
    whose keys hash to the asker by the asker's ring, hottest first, bounded
    by the asked bytes (at most MAX_ANSWER_BYTES) and MAX_SCAN_SECONDS.
    Never loads, never forwards (invariant 3).
    """
    try:
        msg = WarmRequest.FromString(body)
    except DecodeError:
        raise CodecError("malformed protobuf body") from None
    if msg.group and msg.group != group.name:
        raise InvalidKeyError("the body's group is not the group the request names")
    members = list(msg.members)
    if not msg.to or msg.to not in members or len(members) > MAX_MEMBERS:
        raise InvalidKeyError(f"'to' must be one of 'members' (at most {MAX_MEMBERS})")
    pool = group.peers
    if _unsure(pool):
        return WarmResponse(unsure=True).SerializeToString()
    if holds_nothing_for(group, msg.to):
        return WarmResponse(cold=True).SerializeToString()
    _version, ours = pool.ring()
    ring = ours if set(ours.nodes) == set(members) else ours.with_nodes(members)
    to = msg.to
    seconds = min(max(msg.seconds, 0.0), MAX_SCAN_SECONDS)
    entries, truncated = group.hottest(lambda key: ring.get(key) == to, min(msg.max_bytes, MAX_ANSWER_BYTES),
                                       time.monotonic() + seconds)
    now = time.time()
    answer = WarmResponse(truncated=truncated)
    add = answer.items.add
    for key, value, codec, expire_at in entries:
        add(key=key, value=value, codec=codec, status=200, expire_at=expire_at,
            ttl_left=seconds_left(expire_at, now))
    group.stats.add("peer_requests")
    return answer.SerializeToString()


def holds_nothing_for(group, asker: str | None) -> bool:
    """True when this host holds nothing of *group* that could have moved to member *asker*:
    nothing at all, or nothing from before its ring named *asker* (``HTTPPool.holds_nothing_for``)."""
    if group.holds_nothing():
        return True
    return bool(asker) and group.peers.holds_nothing_for(group.name, asker)


def _unsure(pool) -> bool:
    """This host may hold copies overwritten elsewhere (invariant 9): it must not hand them on."""
    if unsure_now():
        return True
    write_log = pool.write_log
    if write_log is not None and write_log.unsure_since():
        return True  # a warm restart not yet settled
    return set(pool.members()) <= {pool.self_address}  # alone: it drops every copy when it joins


class Warmer:
    """Runs the warm-up of *groups* when this host enters a ring (``HTTPPool.on_moved_here``).

    *max_bytes* of values per group, all of it within *seconds*.  One task at
    a time per worker (the event loop's thread guards ``_task``).
    """

    def __init__(self, groups: dict, pool, max_bytes: int, seconds: float) -> None:
        self._groups = groups
        self._pool = pool
        self.max_bytes = int(max_bytes)
        self.seconds = float(seconds)
        self._task: asyncio.Task | None = None

    def moved_here(self, previous: Ring, ring: Ring) -> None:
        """The pool's hook: warm up from *previous*'s owners of the keys *ring* gives this host."""
        if self.max_bytes <= 0 or (self._task is not None and not self._task.done()):
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # a ring read outside the worker's loop: nobody to run it
            return
        self._task = loop.create_task(self.run(previous, ring))

    async def run(self, previous: Ring, ring: Ring) -> None:
        """Warm every group in turn (bounded by ``seconds`` in all); failures are logged, never raised."""
        deadline = time.monotonic() + self.seconds
        for group in self._groups.values():
            if time.monotonic() >= deadline:
                break
            election = hot_group_name(group.name)
            try:
                if not group.claim_flight(_ELECTION_KEY, election):
                    continue  # another worker of this host warms this group
            except GeeCacheError:
                continue
            try:
                await self.warm_group(group, previous, ring, deadline)
            except Exception:
                log.exception("warm-up of group %r failed; its keys are left to the lazy handoff", group.name)
            finally:
                group.release_flight(_ELECTION_KEY, election)

    async def warm_group(self, group, previous: Ring, ring: Ring, deadline: float) -> int:
        """Ask *previous*'s owners for *group*'s entries that *ring* moves here and store them;
        how many were kept."""
        pool = self._pool
        me = pool.self_address
        began = time.monotonic()
        members = ring.nodes
        owners = [m for m in previous.nodes if m != me and m in ring]
        peers = [p for p in (pool.peer_for(m) for m in owners) if p is not None]
        if not peers:
            return 0
        share = min(self.max_bytes // len(peers), MAX_ANSWER_BYTES)
        seconds = max(0.0, deadline - time.monotonic())
        answers = await asyncio.gather(*(asyncio.wait_for(p.warm(group.name, me, members, share, seconds),
                                                          seconds + pool.read_timeout) for p in peers),
                                       return_exceptions=True)
        items = []
        for peer, answer in zip(peers, answers):
            if isinstance(answer, BaseException):
                if not isinstance(answer, (PeerError, asyncio.TimeoutError)):
                    raise answer
                log.info("warm-up of %r: %s did not answer (%s)", group.name, peer.address, answer)
                continue
            if answer.cold:
                pool.note_cold(peer.address, group.name)
            elif not answer.unsure:
                items.extend(answer.items)
        stored: list[str] = []
        for at in range(0, len(items), CHUNK):
            if time.monotonic() >= deadline:
                break
            if not await self._store_chunk(group, items[at:at + CHUNK], began, members, stored):
                return self._drop(group, stored, "a member could not say what it wrote meanwhile")
        late = []
        if stored:  # a write elsewhere whose invalidation overtook the store is in its log
            written, why = await pool.writes_since(time.monotonic() - began + MARGIN, members)
            if written is None:
                return self._drop(group, stored, why)
            late = [key for key in stored if key in written.get(group.name, ())]
            if late:
                group.invalidate(late)
                group.stats.add("warm_drops", len(late))
        group.stats.add("warmups")
        kept = len(stored) - len(late)
        log.info("warm-up of %r: %d entries stored from %d previous owners", group.name, kept, len(peers))
        return kept

    async def _store_chunk(self, group, chunk, began: float, members, stored: list[str]) -> bool:
        """Claim the flight of *chunk*'s keys this host owns, ask what was written since *began*,
        store the rest (their keys appended to *stored*); False when a member could not say."""
        pool = self._pool
        me = pool.self_address
        held = []
        try:
            for item in chunk:
                if pool.owner(item.key) == me and group.claim_flight(item.key):
                    held.append(item)
            if not held:
                return True
            # After the claims: a write applied here since has logged its key by the time the
            # members answer, or waits for the claim and stores its own value again.
            written, why = await pool.writes_since(time.monotonic() - began + MARGIN, members)
            if written is None:
                log.info("warm-up of %r stopped: %s", group.name, why)
                return False
            recent = written.get(group.name, ())
            now = time.time()
            before = len(stored)
            for item in held:
                if item.key in recent:
                    continue
                try:
                    if group.keep_warmed(item.key, item.value, item.codec,
                                         local_expiry(item.expire_at, item.ttl_left, now)):
                        stored.append(item.key)
                except GeeCacheError:  # a bad entry or a stalled shard: that key is left to the handoff
                    continue
            group.stats.add("warm_keys", len(stored) - before)
            return True
        finally:
            for item in held:
                group.release_flight(item.key)

    @staticmethod
    def _drop(group, stored: list[str], why: str) -> int:
        """Nobody can vouch for the warmed entries any more: drop them all."""
        log.warning("warm-up of %r: dropped the %d entries it stored, since %s", group.name, len(stored), why)
        if stored:
            group.invalidate(stored)
            group.stats.add("warm_drops", len(stored))
        return 0
