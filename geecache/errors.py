"""The project's named exceptions, one place for all of them.

Every error a caller can provoke is one of these, so the HTTP layer maps
them to status codes in one table and a library user catches them by name.
"""

from contextlib import contextmanager


class GeeCacheError(Exception):
    """Base of every error this package raises on purpose."""

    #: The HTTP status the server answers with when this error reaches a client.
    http_status = 500
    #: What an HTTP answer says instead of the message, for errors whose message names
    #: the request's key, a group or a source path (kept for the log and library callers).
    public: str | None = None


def public_reason(exc: GeeCacheError) -> str:
    """The reason an HTTP error body gives for *exc*: nothing the request sent, no path."""
    return exc.public if exc.public is not None else str(exc)


class InvalidKeyError(GeeCacheError, ValueError):
    """A key that is empty, not UTF-8, or longer than the key limit."""

    http_status = 400


class ValueTooLargeError(GeeCacheError, ValueError):
    """A value larger than the per-item limit."""

    http_status = 413


class NotFoundError(GeeCacheError, KeyError):
    """The source has no value for this key."""

    http_status = 404
    #: True when a previous owner answered a handoff ask so: it holds nothing of the group
    #: (``HTTPPool.note_cold``).
    cold = False
    public = "not found"

    def __str__(self) -> str:  # KeyError's repr-quoting reads badly in JSON reasons
        return str(self.args[0]) if self.args else "not found"


class UnknownGroupError(GeeCacheError, LookupError):
    """No group of that name is configured."""

    http_status = 400
    public = "unknown group"


class ReadOnlySourceError(GeeCacheError):
    """Set or delete on a group whose source cannot be written (a loader function)."""

    http_status = 405
    public = "this group's source is read-only: GET and HEAD only"


class CodecError(GeeCacheError, ValueError):
    """Unknown codec, or bytes that do not decompress with the codec they name."""

    http_status = 400


class DecodedTooLargeError(CodecError, ValueTooLargeError):
    """A value that decodes (or, codec none, is) larger than the bound given: a 413, still a CodecError."""

    http_status = 413


class VersionAheadError(GeeCacheError, ValueError):
    """A peer's write carries a version further ahead of this host's clock than ``max_clock_drift``."""

    http_status = 400


class LoadError(GeeCacheError):
    """The group's source raised while loading a key; the cause is chained."""

    http_status = 502
    public = "loading from the source failed"


class LoadTimeoutError(LoadError):
    """The group's source did not answer within the group's ``load_timeout``."""

    http_status = 504
    public = "loading from the source took longer than the group's load_timeout"


class SourceGoneError(LoadError):
    """The group's source file was deleted or replaced while the host runs: writes are refused.

    A write to an unlinked SQLite file would be acknowledged and lost at the
    next start; refusing it (503) is the only honest answer until an operator
    restores the file and restarts the host.
    """

    http_status = 503
    public = ("the source's database file was deleted or replaced while the host runs: writes are "
              "refused until it is restored and the host restarted")


class SourceBusyError(LoadError):
    """A write the source could not commit in time: too many already wait, or its commit did not
    come within the bound.

    ``maybe_applied`` False: it was not applied, and will not be; the client may retry it.
    True: the transaction holding it had begun and had not answered within the bound, so it
    may yet commit; sending it again could apply it twice (the answer says so, see
    ``MAYBE_APPLIED_HEADER``).
    """

    http_status = 503
    public = "the source did not commit the write in time (it cannot keep up); retry later"

    def __init__(self, message: str, maybe_applied: bool = False) -> None:
        super().__init__(message)
        self.maybe_applied = maybe_applied
        if maybe_applied:
            self.public = ("the source did not answer the write's commit in time; it may have been "
                           "applied, so it must not be sent again as a new write")


#: The header of a write's 5xx answer whose write may have been applied (its value ``1``): a
#: client must not send that write to another host, or again, as if it had not been.
MAYBE_APPLIED_HEADER = "X-Geecache-Maybe-Applied"


class PeerError(GeeCacheError):
    """A peer fetch failed (refused, timed out, or answered with an error)."""

    http_status = 502
    public = "the host that owns the key could not serve it"
    #: True when this failure opened the peer's circuit breaker (``geecache.cluster.breaker``).
    tripped = False
    #: The HTTP status the peer answered, when it answered one (0: no answer).
    status = 0


class PeerUnavailableError(PeerError):
    """No call was made: the peer's circuit breaker is open (it timed out or refused lately)."""


class ConfigError(GeeCacheError, ValueError):
    """An invalid configuration; the message names the field."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class RefusedError(GeeCacheError):
    """A server refused a client's request with a 4xx other than 404 (bad key, token, size...).

    ``status`` is the HTTP status and ``reason`` the server's message; retrying
    on another host would get the same answer, so the client does not.
    """

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"HTTP {status}: {reason}")
        self.status = status
        self.http_status = status
        self.reason = reason


class UnavailableError(GeeCacheError):
    """No base URL gave an answer: connection refused, timed out, or a 5xx from each.

    ``attempts`` lists ``(url, what happened)`` per host tried, in order.
    """

    http_status = 503

    def __init__(self, attempts: list[tuple[str, str]], maybe_applied: bool = False) -> None:
        detail = "; ".join(f"{url}: {what}" for url, what in attempts) or "no base URL"
        super().__init__(f"no GeeCache host answered ({detail})")
        self.attempts = list(attempts)
        #: True when a write reached a host that then failed to answer: it may have been
        #: applied, so the client sent it nowhere else and did not retry it.
        self.maybe_applied = maybe_applied


class ArenaError(GeeCacheError):
    """The shared-memory arena is unusable: not an arena, wrong layout, or misused."""


@contextmanager
def reported_as(field):
    """Re-raise a ConfigError (or InvalidKeyError) from the block under *our* field name.

    A validator in another module names its own field (``etcd``, ``max_bytes``,
    ``table``); the caller knows which setting it was checking.  *field* is
    that name, or a function of the inner error's field (``None`` for an
    InvalidKeyError), e.g. ``lambda f: f"groups[0].{f}"``.
    """
    try:
        yield
    except (ConfigError, InvalidKeyError) as exc:
        inner, reason = (exc.field, exc.reason) if isinstance(exc, ConfigError) else (None, str(exc))
        raise ConfigError(field(inner) if callable(field) else field, reason) from None


class LockTimeoutError(ArenaError):
    """An arena lock stayed held by a live process past the wait's timeout.

    Reaches a client only from a write whose old cached value could not be
    dropped (the source has the write; a retry is safe): 503, like any
    briefly unavailable service.  The worker watchdog replaces the stalled
    holder, and the lock's robust repair then frees the shard.
    """

    http_status = 503


class TooManyProcessesError(ArenaError):
    """Every per-process stat row of the arena belongs to a live process.

    The arena is created with ``max_procs`` rows; more live processes than
    that cannot count their work, so registering one more is refused.
    """
