"""The compiled hit path: the common ``GET /api?key=K`` hit answered in C, one call per read.

``geecache._hitpath`` (built from geecache/csrc by ``pip install .`` when a C compiler is
there; a failed build leaves the pure-Python package) parses the requests at the start of a
read, probes the arena for the default group's key (owned, then hot copy), and writes every
answer of the read at once.  It stops at the first request that is anything else, and the
Python protocol parses the rest as before; what it answers, it answers byte for byte as
``DataPlaneProtocol._serve_api_key`` would (tests/unit/test_hitpath.py checks that both ways).
The request it stops at is handed back parsed (``HitPath.handed``) when it is a GET whose key
neither partition holds, a common-case ``PUT``/``DELETE /api?key=K``, or a peer's batch of the
default group's keys: the protocol starts its miss path, its write (``_serve_put``/
``_serve_delete``) or the peer batch (``_serve_other``) without httptools parsing it.

Set ``GEECACHE_PURE_PYTHON=1`` (``PURE_PYTHON_ENV``) to serve every request on the Python
path, and make every arena write in Python (the data plane then behaves the same, only slower); ``available()`` says whether the C path is in use.
"""

from __future__ import annotations

import os

from geecache.cluster.httppeer import BATCH, peer_path
from geecache.errors import TooManyProcessesError
from geecache.group import Group
from geecache.limits import hot_group_name
from geecache.shm import Arena
from geecache.shm.arena import PURE_PYTHON_ENV
from geecache.shm.stats import ArenaStats

try:
    from geecache import _hitpath
except ImportError:  # not built (no compiler at install time): the Python path serves all
    # mypy types the name by the import above (the compiled module's stub); None means not built.
    _hitpath = None  # type: ignore[assignment]


def available() -> bool:
    """True when the compiled module is built and not switched off by ``GEECACHE_PURE_PYTHON``."""
    return _hitpath is not None and os.environ.get(PURE_PYTHON_ENV, "") in ("", "0")


def hit_path(group, plane):
    """A ``HitPath`` answering *group*'s hits for *plane* (a ``server._Plane``), or None.

    None when the C path is off, or when *group* is not the plain arena-backed ``Group``
    the C code mirrors (another cache, a subclass, other counters): those take the Python
    path only.
    """
    if not available() or type(group) is not Group:
        return None
    cache = group._cache  # the C reader reads the arena the group's own probes read
    if type(cache) is not Arena or type(group.stats) is not ArenaStats:
        return None
    try:
        return cache.hit_reader(
            group.name, hot_group_name(group.name), _hitpath.HitPath,
            head=plane.hit_head, bounds=tuple(float(b) for b in plane.bounds), tally=plane.hit_tally,
            max_url=plane.max_url_bytes, max_header=plane.max_header_bytes,
            # A PUT body within every body limit needs no limit check: handed back whole.
            max_body=plane.min_body_limit,
            # Accept-Encoding matters only to a group that keeps values compressed.
            accept_ok=not group.packs,
            # A peer's batch of the group's keys, handed back as httptools would have parsed it
            # (Router.peer_batch_fast reads no escaped target: then none is handed).
            batch_target=b"" if b"%" in (target := peer_path(group.name, BATCH).encode()) else target)
    except TooManyProcessesError:
        return None  # no counter row for this process: the Python path says so at its first hit
