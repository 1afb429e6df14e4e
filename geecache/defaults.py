"""Defaults more than one layer uses, each written once: the settings' table
(``geecache/config.py``) and the classes a library user builds directly (``Group``, the storages,
the peer pool and its transport, the data plane) take them from here.

A leaf module: it imports nothing, so any layer may import it.
"""

#: How long a load from the source may take before the request gets a 504.
DEFAULT_LOAD_TIMEOUT = 5.0

#: How long a delete's tombstone refuses older writes.  A late write is one
#: an owner was asked to apply before its deadline (the peer timeout, a few
#: seconds) and reaches the source later, which the deadline check under the
#: write lock already refuses; the tombstone is the second line, and ten
#: minutes is far past any deadline plus clock skew between hosts.  Keeping
#: tombstones forever would grow the file by every key ever deleted.
DEFAULT_TOMBSTONE_TTL = 600.0
#: At least this many expired rows are dropped per write transaction, and two more
#: per row in it (amortised O(1) per write).
PURGE_BATCH = 32

#: Seconds to connect to a peer before falling back to loading locally.
DEFAULT_PEER_CONNECT_TIMEOUT = 0.5
#: Seconds a connected peer has to answer before falling back to loading locally.
DEFAULT_PEER_READ_TIMEOUT = 2.0

#: Keys one batch (``POST /api/batch``, a peer batch) may name.
DEFAULT_BATCH_MAX_KEYS = 1000
#: Bytes of one batch's body, and of the values one batch get answers.
DEFAULT_BATCH_MAX_BYTES = 16 << 20
#: Bytes the batches one worker serves at once may hold.
DEFAULT_BATCH_INFLIGHT_BYTES = 64 << 20

#: Seconds for a request head.  nginx waits 60 s, Apache's mod_reqtimeout 20-40 s; a cache
#: client sends its head in one packet, so 10 s is generous and sheds slowloris sooner.
DEFAULT_HEADER_TIMEOUT = 10.0
#: Seconds an idle keep-alive connection lives: nginx's and aiohttp's 75 s, so pooled
#: clients (load tools, the Python client, peers) keep their connections as before.
DEFAULT_KEEPALIVE_TIMEOUT = 75.0
#: Data-port connections per worker (also capped by RLIMIT_NOFILE).
DEFAULT_MAX_CONNECTIONS = 4096
