"""The peer half of a worker's HTTP app: what other hosts call.

Everything here is served from this host (cache or source) and never
forwarded again: a peer request that hopped again could loop between hosts
whose rings briefly disagree (invariant 3, mailgun/groupcache#72).
"""

from __future__ import annotations

from aiohttp import web
from google.protobuf.message import DecodeError

from geecache.auth import expected_bearer
from geecache.compression import pack
from geecache.errors import CodecError, UnknownGroupError
from geecache.geecachepb import GetResponse, InvalidateRequest
from geecache.httppeers import PEER_PREFIX, PROTOBUF
from geecache.peerwrites import serve_delete, serve_set


class PeerAPI:
    """Handlers for ``/_geecache/...`` over groups by name (``setup`` adds the token check)."""

    def __init__(self, groups: dict) -> None:
        self._groups = groups

    def _group(self, request: web.Request):
        name = request.match_info["group"]
        group = self._groups.get(name)
        if group is None:
            raise UnknownGroupError(f"unknown group {name!r}")
        return group

    async def _body(self, request: web.Request, message):
        try:
            message.ParseFromString(await request.read())
        except DecodeError:
            raise CodecError("malformed protobuf body") from None
        return message

    async def get(self, request: web.Request) -> web.Response:
        """A key this host serves for a peer (cache or source, never forwarded)."""
        group = self._group(request)
        value, expire_at = await group.get_local(request.match_info["key"])
        codec_id, payload = pack(value, group.codec.name)
        msg = GetResponse(value=payload, codec=codec_id, expire_at=expire_at)
        return web.Response(body=msg.SerializeToString(), content_type=PROTOBUF)

    async def put(self, request: web.Request) -> web.Response:
        """The owner's half of a set (``geecache.peerwrites``): a WriteResponse."""
        group = self._group(request)
        body = await serve_set(group, request.match_info["key"], await request.read())
        return web.Response(body=body, content_type=PROTOBUF)

    async def delete(self, request: web.Request) -> web.Response:
        """The owner's half of a delete (``geecache.peerwrites``): a WriteResponse."""
        group = self._group(request)
        body = await serve_delete(group, request.match_info["key"], await request.read())
        return web.Response(body=body, content_type=PROTOBUF)

    async def cluster(self, request: web.Request) -> web.Response:
        """The member list this host routes by, and the owner of ``?key=`` if given."""
        pool = next((g.peers for g in self._groups.values() if hasattr(g.peers, "members")), None)
        if pool is None:
            return web.json_response({"self": None, "members": [], "owner": None})
        key = request.query.get("key")
        return web.json_response({
            "self": pool.self_address,
            "members": list(pool.members()),
            "owner": pool.owner(key) if key else None,
            "breakers": pool.breaker.snapshot(),  # this worker's view
        })

    async def invalidate(self, request: web.Request) -> web.Response:
        """Drop this host's copies of the keys the owner changed."""
        group = self._group(request)
        msg = await self._body(request, InvalidateRequest())
        group.invalidate(list(msg.keys))
        return web.Response(status=204)


def setup(routes, groups: dict, token: str | None = None) -> PeerAPI:
    """Add the peer routes (each behind the token check) through *routes* (``workers.routes.Routes``)."""
    api = PeerAPI(groups)
    bearer = expected_bearer(token)
    routes.add("GET", PEER_PREFIX + "{group}/{key:.+}", api.get, bearer=bearer)
    routes.add("PUT", PEER_PREFIX + "{group}/{key:.+}", api.put, bearer=bearer)
    routes.add("DELETE", PEER_PREFIX + "{group}/{key:.+}", api.delete, bearer=bearer)
    routes.add("POST", PEER_PREFIX + "{group}", api.invalidate, bearer=bearer)
    routes.add("GET", "/cluster", api.cluster)
    return api
