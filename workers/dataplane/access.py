"""The data plane with an access log: ``DataPlaneProtocol`` plus one log line per answer.

Used only when the access log is on (``--access-log``): the plain protocol's
inline hit stays as it is, so a log that is off costs nothing per request.
Here the hit takes the general ``/api`` path (``_serve_other``), which ends
in ``_hit`` like every other hit, and each answer is logged where it is
written: ``_hit``, ``_peer_hit``, ``_reply``, a client gone before its answer (499) and a
refusal.  Answers on one connection are written in request order, so the
target kept when a request is served is the one its answer belongs to.

A line (logger ``geecache.access``, level INFO)::

    127.0.0.1:50412 "GET /api?key=Tom" 200 0.213ms

*sample* in (0, 1] logs that share of the answers, chosen at random.
"""

from __future__ import annotations

import logging
import random
from time import perf_counter

from geecache.observability.logs import ACCESS_LOGGER
from workers.dataplane.protocol import DataPlaneProtocol
from workers.dataplane.query import API_KEY_PREFIX

#: Where the lines go; the root handler (``geecache.observability.logs.configure``) formats them.
access_log = logging.getLogger(ACCESS_LOGGER)

_GET = b"GET"


class AccessLogProtocol(DataPlaneProtocol):
    """A data-plane connection that logs each answer (or a *sample* share of them)."""

    __slots__ = ("_target", "_client", "_answered")

    #: Share of answers logged; set per worker by ``serve_data_plane``.
    sample = 1.0

    def __init__(self, plane) -> None:
        super().__init__(plane)
        self._target = "-"
        self._client = "-"
        self._answered = False

    def connection_made(self, transport) -> None:
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            self._client = f"[{peer[0]}]:{peer[1]}" if ":" in peer[0] else f"{peer[0]}:{peer[1]}"
        super().connection_made(transport)

    def _serve_api_key(self, key: str, end: bytes, start: float) -> None:
        # The general path, so the hit is answered (and logged) by _hit.
        self._serve_other(_GET, API_KEY_PREFIX + key.encode(), None, None, end, start)

    def _serve_other(self, method, url, auth, body, end, start, accept=None) -> None:
        self._target = f"{method.decode('ascii', 'replace')} {url.decode('ascii', 'replace')}"
        super()._serve_other(method, url, auth, body, end, start, accept)

    def _log(self, status: int, start: float) -> None:
        self._answered = True
        if self.sample < 1.0 and random.random() >= self.sample:
            return
        ms = (perf_counter() - start) * 1000
        access_log.info('%s "%s" %d %.3fms', self._client, self._target, status, ms,
                        extra={"access": {"client": self._client, "request": self._target,
                                          "status": status, "ms": round(ms, 3)}})

    def _hit(self, value: bytes, end: bytes, start: float) -> None:
        super()._hit(value, end, start)
        self._log(200, start)

    def _peer_hit(self, body: bytes, end: bytes, start: float, tally: list) -> None:
        super()._peer_hit(body, end, start, tally)
        self._log(200, start)

    def _reply(self, reply, method: str, label: str, start: float, end: bytes, head_only: bool,
               hold: bool = False) -> None:
        super()._reply(reply, method, label, start, end, head_only, hold)
        self._log(reply[0], start)

    def _finish(self, reply, method: str, label: str, start: float, end: bytes, head_only: bool,
                hold: bool = False) -> None:
        self._answered = False
        super()._finish(reply, method, label, start, end, head_only, hold)
        if not self._answered:  # the client left before its answer: counted as 499, logged so
            self._log(499, start)

    def _refuse_now(self, status: int, reason: str) -> None:
        if self._url:
            self._target = f"{self._method.decode('ascii', 'replace') if self._headers_done else '-'} " \
                           f"{self._url.decode('ascii', 'replace')}"
        super()._refuse_now(status, reason)
        self._log(status, self._start or self._t0)
