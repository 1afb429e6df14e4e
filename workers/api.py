"""The public HTTP API of a host: ``/api``, ``/stats``, ``/healthz``.

    GET    /api?key=K[&group=G]   200 value bytes | 404 no such key | 400 bad key/group
    PUT    /api?key=K[&group=G][&ttl=S]  body = value; 204 | 405 read-only source | 413 too large
    DELETE /api?key=K[&group=G]   204 deleted | 404 the source had no such key
    GET    /stats                 {group: {gets, local_hits, ..., bytes, entries, hit_rate}}
    GET    /healthz               {"status": "ok", "pid": ..., "groups": [...]}

``group`` defaults to the first configured group.  With a token configured,
PUT and DELETE require it (``Routes`` checks it, see ``geecache.auth``).
Errors are raised as GeeCacheErrors and answered by ``workers.errors``;
nothing here builds an error response itself.
"""

from __future__ import annotations

import os
from typing import Callable

from aiohttp import web

from geecache.auth import expected_bearer
from geecache.errors import InvalidKeyError, NotFoundError, UnknownGroupError
from geecache.group import hot_group_name
from geecache.stats import STAT_FIELDS

OCTET_STREAM = "application/octet-stream"


def host_stats(group: str, stats: Callable[[str], dict], usage: Callable[[str], tuple[int, int]]) -> dict:
    """One group's counters summed over the host, its cache usage and hit rate.

    ``hit_rate`` is the share of gets served without a source load on this
    host: from the cache, a hot copy, or the owning peer.
    """
    counts = stats(group)
    out = {field: counts.get(field, 0) for field in STAT_FIELDS}
    out["bytes"], out["entries"] = usage(group)
    out["hot_bytes"], out["hot_entries"] = usage(hot_group_name(group))
    hits = out["local_hits"] + out["hot_hits"] + out["peer_hits"]
    out["hit_rate"] = round(hits / out["gets"], 4) if out["gets"] else 0.0
    return out


class PublicAPI:
    """Handlers over the configured groups (a dict in config order)."""

    def __init__(
        self,
        groups: dict,
        *,
        stats: Callable[[str], dict],
        usage: Callable[[str], tuple[int, int]],
        auth_token: str | None = None,
    ) -> None:
        if not groups:
            raise ValueError("at least one group is needed")
        self._groups = groups
        self._default = next(iter(groups.values()))
        self._stats = stats
        self._usage = usage
        self._expected = expected_bearer(auth_token)

    def _group(self, query):
        name = query.get("group")
        if name is None:
            return self._default
        group = self._groups.get(name)
        if group is None:
            raise UnknownGroupError(f"unknown group {name!r}; known: {', '.join(self._groups)}")
        return group

    @staticmethod
    def _key(query) -> str:
        key = query.get("key")
        if key is None:
            raise InvalidKeyError("missing query parameter 'key'")
        return key

    async def get(self, request: web.Request) -> web.Response:
        """The hot path: a synchronous cache probe first, the async load only on a miss."""
        query = request.query
        key = self._key(query)
        group = self._group(query)
        value = group.get_cached(key) if key else None
        if value is None:
            value = await group.load(key)
        return web.Response(body=value, content_type=OCTET_STREAM)

    async def put(self, request: web.Request) -> web.Response:
        """Write the body through to the owner's source, then cache it (auth required)."""
        query = request.query
        key = self._key(query)
        group = self._group(query)
        # read() enforces client_max_size (413) before the group checks its own item limit
        # and the ttl (a string from the query; Group.set validates and converts it).
        await group.set(key, await request.read(), query.get("ttl", 0))
        return web.Response(status=204)

    async def delete(self, request: web.Request) -> web.Response:
        """Delete from the owner's source and cache; 404 when the source had no such key (auth required)."""
        query = request.query
        key = self._key(query)
        if not await self._group(query).delete(key):
            raise NotFoundError(f"no key {key!r}")
        return web.Response(status=204)

    async def stats(self, request: web.Request) -> web.Response:
        """Every group's counters summed over the host's workers, with usage and hit rate."""
        return web.json_response(
            {name: host_stats(name, self._stats, self._usage) for name in self._groups})

    async def healthz(self, request: web.Request) -> web.Response:
        """Liveness: this worker answers, with its pid and groups."""
        return web.json_response({"status": "ok", "pid": os.getpid(), "groups": list(self._groups)})

    def setup(self, routes) -> None:
        """Add the routes through *routes* (a ``workers.routes.Routes``)."""
        routes.add("GET", "/api", self.get)
        routes.add("PUT", "/api", self.put, bearer=self._expected)
        routes.add("DELETE", "/api", self.delete, bearer=self._expected)
        routes.add("GET", "/stats", self.stats)
        routes.add("GET", "/healthz", self.healthz)
