"""Latency tallies of peer calls and source loads: plain per-process counts, exported in batch.

A call adds to a list in this process (one dict lookup, three additions:
well under a microsecond); the worker's admin plane moves the tallies into
prometheus_client's multiprocess histograms every second and before each
scrape (``geecache.observability.metrics.flush_latencies``), as ``HttpMetrics`` does for
requests.  prometheus_client's own ``observe`` takes a lock and writes three
mmap values per call.

Leaf module (standard library only): ``geecache.group`` and
``geecache.cluster.transport`` import it, and it must not import prometheus_client
(whose value class is chosen at its first import).
"""

from __future__ import annotations

from bisect import bisect_left

#: Upper bounds (seconds) of both histograms: a peer hop or a load is 0.1 ms
#: (an in-memory source, a peer on loopback) to seconds (a slow database, a
#: peer timing out; the default peer timeout is seconds, the load timeout 5 s).
BOUNDS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
          1.0, 2.5, 5.0, 10.0)


class Tallies:
    """Counts, sums and bucket counts per label value since the last ``drain``.

    The event loop's one thread is the only writer and reader, so no lock.
    The label values must come from a bounded set (group names, HTTP
    methods): never from a request.
    """

    def __init__(self, bounds: tuple[float, ...] = BOUNDS) -> None:
        self.bounds = bounds
        self._pending: dict[str, list] = {}

    def observe(self, label: str, seconds: float) -> None:
        """Count one call of *label* that took *seconds*."""
        tally = self._pending.get(label)
        if tally is None:
            tally = self._pending[label] = [0, 0.0] + [0] * (len(self.bounds) + 1)
        tally[0] += 1
        tally[1] += seconds
        tally[2 + bisect_left(self.bounds, seconds)] += 1  # le: the first bound >= seconds

    def drain(self) -> list[tuple[str, list]]:
        """(label, [count, sum, bucket counts... +Inf last]) of every label counted since the
        last drain, non-cumulative; the tallies are zeroed."""
        out = []
        for label, tally in self._pending.items():
            if tally[0]:
                out.append((label, tally[:]))
                tally[:] = [0, 0.0] + [0] * (len(tally) - 2)
        return out


#: Peer calls of this process, by HTTP method (GET fetch, PUT, DELETE, POST invalidate).
PEER_CALLS = Tallies()
#: Source loads of this process, by group.
SOURCE_LOADS = Tallies()
