"""Self-signed TLS material for tests, made at test time with the ``openssl`` CLI.

Nothing secret is committed: each test run gets a fresh key and a
certificate for ``127.0.0.1`` (an IP subjectAltName, which is what Python's
hostname check matches for an IP URL), valid for a day.  The certificate is
its own CA, so the same file serves as ``--tls-cert`` and ``--tls-ca``.
The ``openssl`` CLI is used because the ``cryptography`` package is not a
dependency of the project; a missing CLI skips the caller.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
from pathlib import Path

import pytest


def self_signed(directory: Path, name: str = "server", ip: str = "127.0.0.1") -> tuple[Path, Path]:
    """(cert, key) PEM paths of a new self-signed certificate for *ip*, written under *directory*."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl CLI is not on PATH (needed to make a test certificate)")
    cert, key = directory / f"{name}-cert.pem", directory / f"{name}-key.pem"
    # An EC key: generated in milliseconds, where RSA takes a noticeable moment.
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", f"/CN={ip}",
         "-addext", f"subjectAltName=IP:{ip}"],
        check=True, capture_output=True, timeout=30,
    )
    return cert, key


def client_context(ca: Path) -> ssl.SSLContext:
    """A verifying client context that trusts only *ca* (hostname checked)."""
    return ssl.create_default_context(cafile=str(ca))
