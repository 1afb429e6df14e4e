"""mypy over ``geecache`` and ``workers`` under the project's ``[tool.mypy]``: clean.

The Protocols of ``geecache.cache`` and ``geecache.cluster.peers`` are the
contracts callers rely on without ``getattr``; mypy is what holds the
implementations to them (see docs/architecture.md, "Contracts, checked by mypy").
"""

from __future__ import annotations

from pathlib import Path

import pytest

api = pytest.importorskip("mypy.api", reason="mypy is not installed (it is in the test extra)")

ROOT = Path(__file__).resolve().parents[2]


def test_mypy_finds_no_error_in_geecache_and_workers(monkeypatch):
    monkeypatch.chdir(ROOT)  # the config's paths and the cache are the checkout's
    out, err, status = api.run(["--config-file", "pyproject.toml", "geecache", "workers"])
    assert status == 0, f"mypy geecache workers:\n{out}{err}"
    assert out.startswith("Success: no issues found"), out
