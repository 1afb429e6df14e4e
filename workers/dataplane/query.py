"""Parameters and path parts from the raw bytes of a request target.

Decoded the way aiohttp (yarl) decoded queries before, so clients see the
same keys: ``&``-separated, the first occurrence of a name wins, a name
without ``=`` has the value ``""``, ``+`` is a space and ``%XX`` a byte, a
malformed escape stays literal.  One change on purpose: bytes that do not
decode as UTF-8 are refused (InvalidKeyError, a 400) instead of becoming
U+FFFD, which made ``%ff``, ``%fe`` and a literal U+FFFD one key.
"""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

from geecache.errors import InvalidKeyError


def decode(raw: bytes, plus: bool = True) -> str:
    """*raw* percent-decoded (``+`` as a space when *plus*) as strict UTF-8."""
    if plus and b"+" in raw:
        raw = raw.replace(b"+", b" ")
    if b"%" in raw:
        raw = unquote_to_bytes(raw)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidKeyError("the request target is not valid UTF-8 after percent-decoding") from None


#: The target prefix of a public GET or PUT of one key.
API_KEY_PREFIX = b"/api?key="


def plain_api_key(url: bytes) -> str | None:
    """K of a target ``/api?key=K`` whose K needs no decoding (no ``&``, ``%`` or ``+``), else
    None (the target takes ``api_params``).  llhttp admits only ASCII in a target, so K decodes."""
    if url[:9] != API_KEY_PREFIX:
        return None
    key = url[9:]
    if not key or b"&" in key or b"%" in key or b"+" in key:
        return None
    return key.decode()


def parse_query(query: bytes) -> dict[str, str]:
    """The parameters of a raw query string (no leading ``?``), first occurrence wins."""
    params: dict[str, str] = {}
    for part in query.split(b"&"):
        if not part:
            continue
        raw_name, _, raw_value = part.partition(b"=")
        name = decode(raw_name)
        if name not in params:
            params[name] = decode(raw_value)
    return params


def api_params(query: bytes) -> tuple[str | None, str | None]:
    """``(key, group)`` of an ``/api`` query; None for an absent one.

    The common shapes (``key=K``, ``key=K&group=G`` with nothing to decode)
    skip the general parser: this runs on every hit.
    """
    if query[:4] == b"key=":
        amp = query.find(b"&")
        if amp < 0:
            if b"%" not in query and b"+" not in query:
                try:
                    return query[4:].decode(), None
                except UnicodeDecodeError:
                    pass  # the general path raises the 400
        elif query[amp + 1:amp + 7] == b"group=" and b"&" not in query[amp + 7:] and b"%" not in query \
                and b"+" not in query:
            try:
                return query[4:amp].decode(), query[amp + 7:].decode()
            except UnicodeDecodeError:
                pass
    params = parse_query(query)
    return params.get("key"), params.get("group")
