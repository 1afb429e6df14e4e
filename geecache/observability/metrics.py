"""Prometheus metrics of one host: one scrape of any worker gives the host's totals.

Two sources, chosen by cost:

* Group counters (``geecache_gets_total{group=...}`` ...) and the arena
  gauges come from ``ArenaCollector``, which reads the arena's per-process
  stat rows at scrape time.  The counters are kept anyway (``/stats``), so
  exporting them costs nothing per request and the sum is exact across
  workers, dead ones included.
* HTTP request counts and latencies are per-request events only the worker
  sees: ``HttpMetrics`` keeps them in prometheus_client's multiprocess mode
  (one mmap file per worker in ``PROMETHEUS_MULTIPROC_DIR``), which the
  scrape sums over every worker's file.

prometheus_client picks its multiprocess value class when it is first
imported, from ``PROMETHEUS_MULTIPROC_DIR``: the supervisor calls
``prepare_multiproc_dir`` before any prometheus import and before forking, so
every worker inherits the variable.  Import this module only after that.
"""

from __future__ import annotations

import os
import shutil
from bisect import bisect_left
import tempfile
from typing import Callable, Iterable

from geecache.limits import hot_group_name
from geecache.stats import STAT_FIELDS

ENV_DIR = "PROMETHEUS_MULTIPROC_DIR"

#: Latency buckets (seconds).  A hit on the data plane is answered in ~10-30 us of
#: server time, a load or peer hop in 0.2-100 ms: the low buckets tell hits apart
#: from everything else (with 0.5 ms as the lowest, it held 1,805 of 1,807 hits).
LATENCY_BUCKETS = (0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                   0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

# Help strings of the group counters; every STAT_FIELDS entry needs one.
_COUNTER_HELP = {
    "gets": "Group gets (cache lookups of a key).",
    "local_hits": "Gets served from this host's cache of keys it owns.",
    "hot_hits": "Gets served from this host's hot copies of keys other hosts own.",
    "peer_hits": "Gets fetched from the owning peer.",
    "peer_errors": "Peer calls that failed (the get fell back to a local load).",
    "loads": "Source loads run on this host.",
    "loads_deduped": "Misses that waited for another caller's load instead of loading.",
    "load_errors": "Source loads that raised.",
    "evictions": "Entries evicted to make room.",
    "expirations": "Entries dropped because their TTL passed.",
    "sets": "Group sets (write-through).",
    "deletes": "Group deletes.",
    "peer_requests": "Requests served for other hosts.",
    "lock_timeouts": "Cache writes given up because a stalled process held the arena shard lock.",
    "peer_skipped": "Peer calls not made because the owner's circuit breaker was open (served locally).",
    "peer_trips": "Peer calls whose timeout or refusal opened that peer's circuit breaker.",
    "writes_refused": "Writes not applied: older than the source's version of the key, or past their deadline.",
    "handoff_hits": "Misses of keys this host now owns served from the previous owner's cache after a ring change.",
    "handoff_misses": "Handoff asks the previous owner did not answer from its cache (the key loaded from the source).",
    "pause_drops": "Keys dropped after a pause or warm restart because another host wrote them meanwhile.",
    "pause_wipes": "Times every copy was dropped after a pause: the other hosts could not say what changed.",
    "source_commits": "Transactions committed to the group's source (each may hold many writes: group commit).",
    "source_writes": "Writes in the committed transactions (over source_commits: writes shared per commit).",
    "warm_keys": "Entries a warm-up stored after this host joined a ring (the previous owners' hottest).",
    "warm_drops": "Warmed entries dropped again: written elsewhere during the warm-up, or nobody could say.",
    "warmups": "Warm-ups this host finished after joining a ring.",
    "handoff_cold": "Handoff asks not made because the previous owner said lately that it holds nothing.",
}
assert set(_COUNTER_HELP) == set(STAT_FIELDS), "every stat field needs a metric help string"

#: Name prefix of the metrics directories the supervisor creates (and may remove).
MULTIPROC_PREFIX = "geecache-metrics-"


def prepare_multiproc_dir(path: str | None = None) -> tuple[str, bool]:
    """Create (or wipe) the multiprocess directory and export it; (path, created).

    A directory the operator named is wiped of ``*.db`` files but kept;
    otherwise a fresh temporary one is made and ``created`` is True, so the
    supervisor removes it at exit.  Stale files from an earlier run would add
    its counts to this one's.
    """
    path = path or os.environ.get(ENV_DIR) or ""
    created = not path
    if created:
        path = tempfile.mkdtemp(prefix=MULTIPROC_PREFIX)
    else:
        os.makedirs(path, exist_ok=True)
        for name in os.listdir(path):
            if name.endswith(".db"):
                os.unlink(os.path.join(path, name))
    os.environ[ENV_DIR] = path
    return path, created


def remove_multiproc_dir(path: str, created: bool) -> None:
    """At supervisor exit: remove the directory it created, or just its files."""
    if created:
        shutil.rmtree(path, ignore_errors=True)
    else:
        for name in os.listdir(path):
            if name.endswith(".db"):
                os.unlink(os.path.join(path, name))


def mark_process_dead(pid: int) -> None:
    """Tell prometheus_client a worker is gone (drops its live-gauge files).

    Its counter and histogram files stay: totals must not drop when a worker dies.
    """
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid)


class HttpMetrics:
    """Request counter and latency histogram of one worker, batched into its mmap file.

    ``observe`` only adds to plain per-process tallies (measured: about 0.5 us,
    against about 4 us for prometheus_client's per-call ``observe``, which
    takes a lock and writes three mmap values); the data plane's hit path
    holds its tally list (``tally``) and adds to it directly.  ``flush`` moves the tallies into the multiprocess files: the worker
    calls it every FLUSH_INTERVAL, before its own scrape, and at exit, so a
    scrape of any worker lags the others by at most that interval.  Routes are
    the router's patterns (``/api``), never raw paths: a client must not be
    able to mint label values; ``status`` is the exact code (a few dozen the
    server can answer with), so a miss (404) is told from a 401 or a 413.

    The data plane's connection and byte counts are plain integers it keeps
    itself; ``traffic`` hands their running totals over, and ``flush`` adds
    what they grew by since the last flush.
    """

    #: Seconds between flushes of the tallies into the shared files.
    FLUSH_INTERVAL = 1.0

    def __init__(self, registry=None) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        # A private registry: in multiprocess mode the values live in the
        # files; the scrape builds its own registry from them.
        registry = registry if registry is not None else CollectorRegistry(auto_describe=False)
        labels = ("method", "route", "status")
        self._requests = Counter(
            "geecache_http_requests", "HTTP requests served.", labels, registry=registry)
        self._latency = Histogram(
            "geecache_http_request_duration_seconds", "HTTP request latency.", labels,
            buckets=LATENCY_BUCKETS, registry=registry)
        self._open = Gauge("geecache_connections_open", "Open data-port connections.",
                           registry=registry, multiprocess_mode="livesum")
        self._traffic = [
            Counter("geecache_connections_accepted", "Data-port connections taken in.", registry=registry),
            Counter("geecache_connections_refused", "Data-port connections refused at max_connections "
                    "(answered 503 and closed).", registry=registry),
            Counter("geecache_bytes_read", "Bytes read from data-port connections.", registry=registry),
            Counter("geecache_bytes_written", "Bytes written to data-port connections.", registry=registry),
        ]
        self._traffic_seen = [0, 0, 0, 0]
        self._traffic_now = [0, 0, 0, 0]
        self._open_now = 0
        # (method, route, status) -> [count, sum, per-bucket counts...] since the
        # last flush.  The lists live as long as this object and are zeroed in place,
        # so a hot path may hold one (``tally``) and add to it directly; the event
        # loop's one thread guards them.
        self._pending: dict[tuple[str, str, int], list] = {}
        self._bounds = LATENCY_BUCKETS

    @property
    def bounds(self) -> tuple[float, ...]:
        """The histogram's upper bounds; a tally's bucket i counts ``bounds[i-1] < s <= bounds[i]``."""
        return self._bounds

    def traffic(self, open_now: int, accepted: int, refused: int, read: int, written: int) -> None:
        """The data plane's open connections and running totals, for the next ``flush``."""
        self._open_now = open_now
        self._traffic_now = [accepted, refused, read, written]

    def tally(self, method: str, route: str, status: int) -> list:
        """The live tally of (method, route, status): ``[count, sum, bucket counts...]``.

        For a hot path that counts one kind of answer: keep the list and add
        to it in place (``t[0] += 1; t[1] += s; t[2 + bisect_left(bounds, s)] += 1``);
        ``flush`` reads and zeroes it without replacing it.
        """
        key = (method, route, status)
        tally = self._pending.get(key)
        if tally is None:
            if len(self._pending) > 1000:  # bounded even if methods vary wildly
                key = ("other", route, status)
            tally = self._pending.setdefault(key, [0, 0.0] + [0] * (len(self._bounds) + 1))
        return tally

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one request and its latency (in this process's tallies)."""
        tally = self._pending.get((method, route, status)) or self.tally(method, route, status)
        tally[0] += 1
        tally[1] += seconds
        tally[2 + bisect_left(self._bounds, seconds)] += 1  # le: first bound >= seconds

    def flush(self) -> None:
        """Add the tallies to the shared files and zero them."""
        self._open.set(self._open_now)
        for counter, seen, now in zip(self._traffic, self._traffic_seen, self._traffic_now):
            if now > seen:
                counter.inc(now - seen)
        self._traffic_seen = list(self._traffic_now)
        for (method, route, status), tally in self._pending.items():
            if not tally[0]:
                continue
            counts = tally[:]
            tally[:] = [0, 0.0] + [0] * (len(tally) - 2)
            labels = (method, route, str(status))
            self._requests.labels(*labels).inc(counts[0])
            child = self._latency.labels(*labels)
            # prometheus_client has no "add n observations"; its Histogram keeps
            # _sum and non-cumulative _buckets (+Inf last), which we add to directly.
            child._sum.inc(counts[1])
            for i, n in enumerate(counts[2:]):
                if n:
                    child._buckets[i].inc(n)


class ArenaCollector:
    """Exports the arena's host-wide group counters and usage at scrape time.

    *stats* returns a group's counters summed over every process; *usage*
    returns its (bytes, entries).
    """

    def __init__(
        self,
        groups: Iterable[str],
        stats: Callable[[str], dict[str, int]],
        usage: Callable[[str], tuple[int, int]],
        arena_bytes: int,
        budgets: Callable[[str], tuple[int, int]] | None = None,
    ) -> None:
        self._groups = list(groups)
        self._stats = stats
        self._usage = usage
        self._arena_bytes = arena_bytes
        self._budgets = budgets  # group -> (its budget, its hot copies' budget), in bytes

    def describe(self):
        return []  # unchecked collector: names are fixed, no need to describe

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        counters = {
            field: CounterMetricFamily(f"geecache_{field}", _COUNTER_HELP[field], labels=["group"])
            for field in STAT_FIELDS
        }
        cache_bytes = GaugeMetricFamily(
            "geecache_cache_bytes", "Bytes of keys and values cached.", labels=["group"])
        cache_entries = GaugeMetricFamily(
            "geecache_cache_entries", "Entries cached.", labels=["group"])
        hot_bytes = GaugeMetricFamily(
            "geecache_hot_cache_bytes", "Bytes of hot copies of keys other hosts own.", labels=["group"])
        hot_entries = GaugeMetricFamily(
            "geecache_hot_cache_entries", "Hot copies of keys other hosts own.", labels=["group"])
        for group in self._groups:
            snapshot = self._stats(group)
            for field in STAT_FIELDS:
                counters[field].add_metric([group], snapshot.get(field, 0))
            used, entries = self._usage(group)
            cache_bytes.add_metric([group], used)
            cache_entries.add_metric([group], entries)
            used, entries = self._usage(hot_group_name(group))
            hot_bytes.add_metric([group], used)
            hot_entries.add_metric([group], entries)
        yield from counters.values()
        yield from (cache_bytes, cache_entries, hot_bytes, hot_entries)
        if self._budgets is not None:
            budget = GaugeMetricFamily("geecache_cache_budget_bytes", "The group's cache budget (max_bytes).",
                                       labels=["group"])
            hot_budget = GaugeMetricFamily("geecache_hot_cache_budget_bytes", "Bytes reserved for the "
                                           "group's hot copies (hot_share of max_bytes).", labels=["group"])
            for group in self._groups:
                own, hot = self._budgets(group)
                budget.add_metric([group], own)
                hot_budget.add_metric([group], hot)
            yield from (budget, hot_budget)
        yield GaugeMetricFamily(
            "geecache_arena_size_bytes", "Size of the shared-memory arena.", value=self._arena_bytes)


def render(collector: ArenaCollector) -> tuple[bytes, str]:
    """(body, content type) of one scrape: the arena's counters plus every worker's files."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry(auto_describe=False)
    if os.environ.get(ENV_DIR):
        MultiProcessCollector(registry)
    registry.register(collector)
    return generate_latest(registry), CONTENT_TYPE_LATEST



def _add_observations(child, counts: list) -> None:
    """Add a tally (``[count, sum, non-cumulative bucket counts..., +Inf]``) to histogram *child*.

    prometheus_client has no "add n observations"; its Histogram keeps
    ``_sum`` and non-cumulative ``_buckets`` (+Inf last), added to directly.
    """
    child._sum.inc(counts[1])
    for i, n in enumerate(counts[2:]):
        if n:
            child._buckets[i].inc(n)


class LatencyMetrics:
    """Peer-call and source-load latency histograms of one worker, fed in batch from
    ``geecache.observability.latency``'s tallies (``flush``: every second and before a scrape)."""

    def __init__(self, registry=None) -> None:
        from prometheus_client import CollectorRegistry, Histogram

        from geecache.observability.latency import BOUNDS

        registry = registry if registry is not None else CollectorRegistry(auto_describe=False)
        self._peer = Histogram(
            "geecache_peer_call_duration_seconds",
            "Calls to other hosts (GET fetch, PUT, DELETE, POST invalidate), failures included.",
            ["method"], buckets=BOUNDS, registry=registry)
        self._load = Histogram(
            "geecache_source_load_duration_seconds", "Source loads, failures included.",
            ["group"], buckets=BOUNDS, registry=registry)

    def flush(self) -> None:
        """Move this process's tallies into the shared files."""
        from geecache.observability.latency import PEER_CALLS, SOURCE_LOADS

        for family, tallies in ((self._peer, PEER_CALLS), (self._load, SOURCE_LOADS)):
            for label, counts in tallies.drain():
                _add_observations(family.labels(label), counts)


#: Gauge values of a breaker's states (``geecache.cluster.breaker``): 0 lets calls through.
BREAKER_STATES = {"closed": 0, "open": 1, "half_open": 2}


class HostCollector:
    """The host's shape at scrape time: build, workers, ring, every child's heartbeat and
    /proc counters, this worker's breakers.

    *view* is ``workers.dashboard.HostView`` (duck-typed here: ``build()``,
    ``children()``, ``ring()``, ``breakers()``).  Child series are labelled
    ``process="worker-<slot>"``, ``"registrar"`` or ``"supervisor"``, never
    by pid: a slot's respawned worker continues its series (a counter reset,
    which ``rate()`` handles) instead of starting a new one per restart.
    """

    def __init__(self, view) -> None:
        self._view = view

    def describe(self):
        """Nothing: an unchecked collector (its names are fixed)."""
        return []

    def collect(self):
        """The families, read from *view* now."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        view = self._view
        version, python = view.build()
        info = GaugeMetricFamily("geecache_build_info", "GeeCache's version and Python's; always 1.",
                                 labels=["version", "python"])
        info.add_metric([version, python], 1)
        yield info
        children = view.children()
        workers = [c for c in children if c["kind"] == "worker"]
        yield GaugeMetricFamily("geecache_workers", "Live worker processes (a roll overlaps old and new).",
                                value=len(workers))
        yield GaugeMetricFamily("geecache_workers_ready", "Worker processes that serve (heartbeat seen).",
                                value=sum(1 for c in workers if c["ready"]))
        yield GaugeMetricFamily("geecache_workers_configured", "Worker processes the config asks for.",
                                value=view.workers_configured)
        ring = view.ring()
        yield GaugeMetricFamily("geecache_ring_members", "Members of the ring this host routes by.",
                                value=len(ring["members"]))
        yield GaugeMetricFamily("geecache_ring_version", "Version of the member list (moves on each change).",
                                value=ring["version"])
        ready = GaugeMetricFamily("geecache_child_ready", "1 once the child's first heartbeat was stamped.",
                                  labels=["process"])
        age = GaugeMetricFamily("geecache_child_heartbeat_age_seconds",
                                "Seconds since the child's event loop last stamped its heartbeat "
                                "(the supervisor replaces it past worker_timeout).", labels=["process"])
        cpu = CounterMetricFamily("geecache_process_cpu_seconds", "User and system CPU time.",
                                  labels=["process"])
        rss = GaugeMetricFamily("geecache_process_resident_memory_bytes", "Resident memory (shared arena "
                                "pages it touched included).", labels=["process"])
        vms = GaugeMetricFamily("geecache_process_virtual_memory_bytes", "Virtual memory.", labels=["process"])
        start = GaugeMetricFamily("geecache_process_start_time_seconds", "Start time since the epoch.",
                                  labels=["process"])
        fds = GaugeMetricFamily("geecache_process_open_fds", "Open file descriptors.", labels=["process"])
        for child in _one_per_label(children):
            label = [child["process"]]
            if child["kind"] != "supervisor":
                ready.add_metric(label, 1 if child["ready"] else 0)
                if child["heartbeat_age"] is not None:
                    age.add_metric(label, child["heartbeat_age"])
            proc = child.get("proc")
            if proc is None:
                continue
            cpu.add_metric(label, proc.cpu_seconds)
            rss.add_metric(label, proc.resident_bytes)
            vms.add_metric(label, proc.virtual_bytes)
            start.add_metric(label, proc.start_time)
            if proc.open_fds is not None:
                fds.add_metric(label, proc.open_fds)
        yield from (ready, age, cpu, rss, vms, start, fds)
        breakers = view.breakers()
        if breakers is not None:
            state = GaugeMetricFamily(
                "geecache_peer_breaker_state", "This worker's circuit breaker per peer: 0 closed, 1 open, "
                "2 half-open (each worker keeps its own).", labels=["peer"])
            for peer, name in sorted(breakers.items()):
                state.add_metric([peer], BREAKER_STATES.get(name, 1))
            yield state


def _one_per_label(children: list[dict]) -> list[dict]:
    """One child per ``process`` label: the newest, while a SIGHUP roll overlaps two in one slot."""
    newest: dict[str, dict] = {}
    for child in children:
        seen = newest.get(child["process"])
        if seen is None or child["started_ns"] > seen["started_ns"]:
            newest[child["process"]] = child
    return list(newest.values())


def render_all(*collectors) -> tuple[bytes, str]:
    """(body, content type) of one scrape: every worker's files plus *collectors*."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry(auto_describe=False)
    if os.environ.get(ENV_DIR):
        MultiProcessCollector(registry)
    for collector in collectors:
        registry.register(collector)
    return generate_latest(registry), CONTENT_TYPE_LATEST


def http_summary() -> dict:
    """The host's request figures the dashboard charts, read from every worker's files:
    ``by_status`` (answers per exact status, both ports), ``api_buckets`` (``GET /api``'s
    cumulative latency buckets, ``[[upper bound, count], ...]``, +Inf last) and
    ``connections_open`` (data-port connections now).  Empty outside multiprocess mode."""
    out: dict = {"by_status": {}, "api_buckets": [], "connections_open": 0}
    if not os.environ.get(ENV_DIR):
        return out
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    by_status: dict[str, float] = {}
    buckets: dict[float, float] = {}
    for family in MultiProcessCollector(CollectorRegistry(auto_describe=False)).collect():
        for sample in family.samples:
            if sample.name == "geecache_http_requests_total":
                status = sample.labels.get("status", "")
                by_status[status] = by_status.get(status, 0) + sample.value
            elif (sample.name == "geecache_http_request_duration_seconds_bucket"
                  and sample.labels.get("route") == "/api" and sample.labels.get("method") == "GET"):
                le = float(sample.labels["le"])
                buckets[le] = buckets.get(le, 0) + sample.value
            elif sample.name == "geecache_connections_open":
                out["connections_open"] += sample.value
    out["by_status"] = {k: int(v) for k, v in sorted(by_status.items())}
    # (JSON has no infinity: the last bound is sent as null.)
    out["api_buckets"] = [[None if le == float("inf") else le, int(n)] for le, n in sorted(buckets.items())]
    out["connections_open"] = int(out["connections_open"])
    return out
