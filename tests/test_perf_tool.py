"""The perf tool stays runnable: every bench imports, and one quick bench runs end to end."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import pytest

from tests.support.proc import REPO

BENCHES = ("compression", "arena", "http", "scaling", "cluster")


@pytest.mark.parametrize("name", BENCHES)
def test_every_bench_imports_and_has_run(name):
    module = importlib.import_module(f"tests.perf.bench_{name}")
    assert callable(module.run)


@pytest.mark.procs
def test_quick_compression_bench_runs_and_writes_json(tmp_path):
    out = tmp_path / "compression.json"
    r = subprocess.run([sys.executable, "tests/perf/main.py", "compression", "--quick", "--json", str(out)],
                       cwd=str(REPO), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    record = json.loads(out.read_text())
    assert record["name"] == "compression"
    codecs = {row[2] for t in record["tables"] for row in t["rows"]}
    assert {"gzip", "snappy", "lz4", "zstd"} <= codecs
    assert "ratio" in r.stdout


@pytest.mark.procs
def test_unknown_bench_is_refused():
    r = subprocess.run([sys.executable, "tests/perf/main.py", "nosuch"], cwd=str(REPO),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
