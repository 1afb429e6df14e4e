"""The lean peer client against small real servers: framing, keep-alive, stale connections, timeouts."""

from __future__ import annotations

import asyncio

import pytest

from geecache.cluster.transport import MAX_BODY, ConnectionPool, PeerProtocolError


async def serve(answers):
    """A loopback server answering each request with the next item of *answers*.

    An item is the answer's bytes, None (close instead of answering), or
    (bytes, "close") to close right after answering.
    """
    seen = []

    async def handle(reader, writer):
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                body = await reader.readexactly(length)
                seen.append((head.split(b" ")[0], body))
                answer = answers.pop(0) if answers else None
                if answer is None:
                    break
                close = isinstance(answer, tuple)
                writer.write(answer[0] if close else answer)
                await writer.drain()
                if close:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", seen


def test_content_length_chunked_and_keep_alive():
    async def main():
        answers = [b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
                   b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
                   b"HTTP/1.1 204 No Content\r\n\r\n"]
        server, url, seen = await serve(answers)
        pool = ConnectionPool(url)
        try:
            assert await pool.request("GET", "/a") == (200, b"hello")
            assert await pool.request("PUT", "/b", {"X-T": "1"}, b"body") == (200, b"abcde")
            assert await pool.request("DELETE", "/c") == (204, b"")
            assert seen == [(b"GET", b""), (b"PUT", b"body"), (b"DELETE", b"")]
            assert len(pool._idle) == 1  # one connection carried all three
        finally:
            pool.close()
            server.close()
    asyncio.run(main())


def test_a_stale_idle_connection_is_replaced_and_close_is_honoured():
    async def main():
        answers = [b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na", None,  # then the server drops it
                   b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: close\r\n\r\nb"]
        server, url, seen = await serve(answers)
        pool = ConnectionPool(url)
        try:
            assert await pool.request("GET", "/1") == (200, b"a")
            # The idle connection is closed by the server when it reads the next request:
            # nothing came back, so the client retries on a fresh connection.
            assert await pool.request("GET", "/2") == (200, b"b")
            assert pool._idle == []  # Connection: close is not kept
        finally:
            pool.close()
            server.close()
    asyncio.run(main())


def test_timeouts_bad_answers_and_oversize_bodies_are_errors():
    async def main():
        answers = [b"NOT HTTP\r\n\r\n", f"HTTP/1.1 200 OK\r\nContent-Length: {MAX_BODY + 1}\r\n\r\n".encode()]
        server, url, _ = await serve(answers)
        pool = ConnectionPool(url, read_timeout=0.3)
        try:
            with pytest.raises(PeerProtocolError):
                await pool.request("GET", "/bad")
            with pytest.raises(PeerProtocolError):
                await pool.request("GET", "/big")
            silent = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
            quiet = ConnectionPool(f"http://127.0.0.1:{silent.sockets[0].getsockname()[1]}", read_timeout=0.2)
            with pytest.raises(TimeoutError):
                await quiet.request("GET", "/never")
            silent.close()
            with pytest.raises(OSError):
                await ConnectionPool("http://127.0.0.1:1", connect_timeout=0.5).request("GET", "/refused")
        finally:
            pool.close()
            server.close()
    asyncio.run(main())


def test_a_body_that_ends_at_close():
    async def main():
        server, url, _ = await serve([(b"HTTP/1.0 200 OK\r\n\r\nuntil-close", "close")])
        pool = ConnectionPool(url)
        try:
            assert await pool.request("GET", "/x") == (200, b"until-close")
        finally:
            pool.close()
            server.close()
    asyncio.run(main())
