"""Groups with a codec keep their values compressed in the arena.

Real supervisors with a TOML config: values round-trip through set, get and
load on one host and across two (``--peers``); the arena holds fewer bytes
than the raw values; a public GET passes a gzip entry through with
``Content-Encoding`` to a client that accepts it (decoded by aiohttp and by
``gzip.decompress``) and decompresses for one that does not; the owner
answers a peer GET with the stored bytes and their codec id.  In process, an
arena-backed group compresses a value once, however often peers read it.
"""

from __future__ import annotations

import asyncio
import gzip
import http.client
import os

import aiohttp
import pytest

from geecache.compression import codec_by_id, get_codec, unpack
from geecache.geecachepb import GetResponse
from geecache.group import Group
from geecache.storage.memory import MemoryStorage
from tests.support.loaders import document
from tests.support.cluster import static_hosts
from tests.support.proc import start_supervisor

CODECS = ("gzip", "snappy", "lz4", "zstd")


def _config(tmp_path) -> str:
    path = tmp_path / "geecache.toml"
    text = "".join(f'[[groups]]\nname = "{c}"\nsqlite = "{tmp_path / (c + ".db")}"\ncodec = "{c}"\n\n'
                   for c in CODECS)
    text += f'[[groups]]\nname = "raw"\nsqlite = "{tmp_path / "raw.db"}"\n\n'
    text += '[[groups]]\nname = "docs"\nloader = "tests.support.loaders:json_doc"\ncodec = "gzip"\n'
    path.write_text(text)
    return str(path)


def _get(port: int, query: str, headers: dict | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/api?" + query, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def _put(port: int, group: str, key: str, value: bytes) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("PUT", f"/api?group={group}&key={key}", body=value)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("compressed")
    h = start_supervisor(tmp, "--config", _config(tmp), workers=2)
    yield h
    h.stop()


VALUES = {"doc": document("doc"), "small": b"tiny value", "random": os.urandom(2000), "empty": b""}


@pytest.mark.procs
@pytest.mark.parametrize("codec", CODECS + ("raw",))
def test_set_then_get_round_trips_every_kind_of_value(host, codec):
    for key, value in VALUES.items():
        assert _put(host.port, codec, key, value) == 204
        for _ in range(2):  # both workers of the host read the one arena entry
            status, headers, body = _get(host.port, f"group={codec}&key={key}")
            assert (status, body) == (200, value)
            assert "Content-Encoding" not in headers


@pytest.mark.procs
def test_a_loaded_value_is_kept_compressed_and_served_whole(host):
    for i in range(20):
        status, _, body = _get(host.port, f"group=docs&key=d{i}")
        assert (status, body) == (200, document(f"d{i}"))
        assert _get(host.port, f"group=docs&key=d{i}")[2] == document(f"d{i}")  # the hit
    stats = host.admin_json("/stats")["docs"]
    assert stats["entries"] == 20
    raw = sum(len(document(f"d{i}")) for i in range(20))
    assert stats["bytes"] < raw * 0.5  # gzip keeps a fraction of these documents


@pytest.mark.procs
def test_the_arena_holds_fewer_bytes_than_the_raw_values(host):
    for i in range(20):
        for group in ("lz4", "raw"):
            assert _put(host.port, group, f"u{i}", document(f"u{i}")) == 204
    stats = host.admin_json("/stats")
    assert stats["lz4"]["bytes"] < stats["raw"]["bytes"] * 0.55


@pytest.mark.procs
def test_content_encoding_passthrough_when_accepted(host):
    value = document("ce")
    assert _put(host.port, "gzip", "ce", value) == 204
    status, headers, body = _get(host.port, "group=gzip&key=ce", {"Accept-Encoding": "gzip, deflate"})
    assert (status, headers.get("Content-Encoding"), headers.get("Vary")) == (200, "gzip", "Accept-Encoding")
    assert len(body) < len(value) and gzip.decompress(body) == value
    # Not accepted (or refused with q=0): the value decompressed, still with Vary.
    for accept in ("br", "gzip;q=0", "identity"):
        status, headers, body = _get(host.port, "group=gzip&key=ce", {"Accept-Encoding": accept})
        assert (status, body, headers.get("Vary")) == (200, value, "Accept-Encoding")
        assert "Content-Encoding" not in headers
    # zstd passes through to a client accepting zstd; lz4 is no HTTP coding: always decompressed.
    assert _put(host.port, "zstd", "ce", value) == 204
    status, headers, body = _get(host.port, "group=zstd&key=ce", {"Accept-Encoding": "zstd"})
    assert headers.get("Content-Encoding") == "zstd" and unpack(get_codec("zstd").id, body) == value
    assert _put(host.port, "lz4", "ce", value) == 204
    status, headers, body = _get(host.port, "group=lz4&key=ce", {"Accept-Encoding": "lz4, *"})
    assert (status, body) == (200, value) and "Content-Encoding" not in headers
    # A group without a codec: the value as is, whatever the client accepts.
    assert _put(host.port, "raw", "ce", value) == 204
    status, headers, body = _get(host.port, "group=raw&key=ce", {"Accept-Encoding": "gzip"})
    assert (status, body) == (200, value) and "Content-Encoding" not in headers
    # A small value is stored raw: nothing to pass through.
    assert _put(host.port, "gzip", "sm", b"x" * 20) == 204
    status, headers, body = _get(host.port, "group=gzip&key=sm", {"Accept-Encoding": "gzip"})
    assert (body, "Content-Encoding" in headers) == (b"x" * 20, False)


@pytest.mark.procs
def test_aiohttp_decodes_the_passed_through_value(host):
    value = document("aio")
    assert _put(host.port, "gzip", "aio", value) == 204

    async def go():
        async with aiohttp.ClientSession() as session:  # sends Accept-Encoding: gzip, deflate
            async with session.get(f"http://127.0.0.1:{host.port}/api?group=gzip&key=aio") as resp:
                return resp.headers.get("Content-Encoding"), await resp.read()

    assert asyncio.run(go()) == ("gzip", value)


@pytest.mark.procs
def test_the_owner_answers_a_peer_get_with_the_stored_bytes(host):
    value = document("peer")
    assert _put(host.port, "zstd", "peer", value) == 204
    _, _, stored = _get(host.port, "group=zstd&key=peer", {"Accept-Encoding": "zstd"})
    conn = http.client.HTTPConnection("127.0.0.1", host.port, timeout=10)
    try:
        conn.request("GET", "/_geecache/zstd/peer")
        resp = conn.getresponse()
        assert resp.status == 200
        msg = GetResponse()
        msg.ParseFromString(resp.read())
    finally:
        conn.close()
    assert (codec_by_id(msg.codec).name, msg.value) == ("zstd", stored)
    assert unpack(msg.codec, msg.value) == value


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("compressed2")
    config = _config(tmp)
    with static_hosts(tmp, 2, "--config", config) as hosts:
        yield hosts


@pytest.mark.procs
def test_two_hosts_share_compressed_values_and_keep_hot_copies_compressed(two):
    a, b = two
    keys = [f"k{i}" for i in range(30)]
    for key in keys:  # writes go to each key's owner, whichever host is asked
        assert _put(a.port, "lz4", key, document(key)) == 204
    # Each host reads every key: a key the other owns becomes a hot copy at a worker's second
    # fetch of it (hot_after: with two workers, by the third read at the latest).
    for h in (a, b) * 3:
        for key in keys:
            status, _, body = _get(h.port, f"group=lz4&key={key}")
            assert (status, body) == (200, document(key))
    for key in keys * 3:  # loads: the owner loads, the other host keeps a hot copy (as above)
        assert _get(b.port, f"group=docs&key={key}")[2] == document(key)
        assert _get(a.port, f"group=docs&key={key}")[2] == document(key)
    raw = sum(len(document(k)) for k in keys)
    stats = [h.admin_json("/stats") for h in (a, b)]
    assert sum(s["lz4"]["peer_hits"] for s in stats) > 0
    for group in ("lz4", "docs"):
        owned = sum(s[group]["bytes"] for s in stats)
        hot = sum(s[group]["hot_bytes"] for s in stats)
        assert sum(s[group]["entries"] for s in stats) == len(keys)
        assert sum(s[group]["hot_entries"] for s in stats) > 0
        assert owned < raw * 0.55 and hot < raw * 0.55  # owners' and hot copies both compressed


class _CountingZstd(type(get_codec("zstd"))):
    """zstd that counts its compress calls."""

    calls = 0

    def compress(self, data: bytes) -> bytes:
        """Compress *data*, counted."""
        type(self).calls += 1
        return super().compress(data)


def test_a_value_is_compressed_once_however_often_peers_read_it(make_arena, tmp_path):
    arena = make_arena(4 << 20)
    codec = _CountingZstd()
    group = Group("z", MemoryStorage(), max_bytes=1 << 20, cache=arena, codec=codec)
    value = document("once")

    async def go():
        await group.set("once", value)
        for _ in range(5):
            payload, codec_id, _exp = group.get_local_packed("once")
            assert codec_id == codec.id and unpack(codec_id, payload) == value
            assert group.get_local_cached("once")[0] == value
            assert group.get_cached("once") == value
        assert await group.get("once") == value

    asyncio.run(go())
    assert _CountingZstd.calls == 1
