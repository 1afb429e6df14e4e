"""The bearer token both HTTP APIs check, over raw header bytes.

No HTTP framework here: the aiohttp routes (``workers.routes``) and any
other HTTP layer check a request the same way, from the ``Authorization``
header's bytes as they came off the wire.
"""

from __future__ import annotations

import hmac

#: The WWW-Authenticate challenge a 401 carries (RFC 6750).
CHALLENGE = 'Bearer realm="geecache"'
#: What a 401 says.
REASON = "missing or wrong bearer token"


def bearer(token: str) -> str:
    """The ``Authorization`` header value that presents *token*."""
    return "Bearer " + token


def expected_bearer(token: str | None) -> bytes | None:
    """The ``Authorization`` header bytes a token requires (None: no token, no check)."""
    return bearer(token).encode() if token else None


def authorized(header: bytes | None, expected: bytes | None) -> bool:
    """True when *header* (the raw ``Authorization`` value, None if absent) is *expected*.

    Constant-time, so the comparison's duration says nothing about the token.
    """
    if expected is None:
        return True
    return hmac.compare_digest(header or b"", expected)
