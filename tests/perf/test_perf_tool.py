"""The perf tool stays runnable: every bench imports, and one quick bench runs end to end."""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.proc import REPO

BENCHES = ("compression", "arena", "packed", "policy", "scale", "http", "scaling", "cluster", "remote", "batch",
           "write", "miss")


@pytest.mark.parametrize("name", BENCHES)
def test_every_bench_imports_and_has_run(name):
    module = importlib.import_module(f"tests.perf.bench_{name}")
    assert callable(module.run)


@pytest.mark.procs
def test_quick_compression_bench_runs_and_writes_json(tmp_path):
    out = tmp_path / "compression.json"
    env = {**os.environ, "GEECACHE_PERF_OUT": str(tmp_path / "out")}
    r = subprocess.run([sys.executable, "tests/perf/main.py", "compression", "--quick", "--json", str(out)],
                       cwd=str(REPO), capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    record = json.loads(out.read_text())
    assert record["name"] == "compression"
    codecs = {row[2] for t in record["tables"] for row in t["rows"]}
    assert {"gzip", "snappy", "lz4", "zstd"} <= codecs
    assert "ratio" in r.stdout
    # `none` does no work: no speed is reported for it (it was hundreds of GB/s), none in the summary.
    none_rows = [row for t in record["tables"] for row in t["rows"] if row[2] == "none"]
    assert none_rows and all(row[5] is None and row[6] is None for row in none_rows)
    assert not [k for k in record["summary"] if k.endswith(".none") and "mbs" in k]
    # A plot per run, named with the run's stamp (a later run does not overwrite it).
    pytest.importorskip("matplotlib")
    (plot,) = record["plots"]
    assert Path(plot).parent == tmp_path / "out" and Path(plot).is_file()
    assert re.fullmatch(r"compression-\d{8}-\d{6}\.png", Path(plot).name)


@pytest.mark.procs
def test_batch_bench_runs_at_a_tiny_size():
    from tests.perf import bench_batch

    out = bench_batch.run(True, n=200)
    (t,) = out["tables"]
    assert [row[0] for row in t["rows"]] == ["one host, cached", "three hosts, remote", "three hosts, hot"]
    assert all(v > 0 for k, v in out["summary"].items() if k.endswith("keys_per_s"))


@pytest.mark.procs
def test_remote_bench_runs_at_a_tiny_size():
    from tests.perf import bench_remote

    out = bench_remote.run(True, seconds=1, rounds=1, fresh=300)
    rounds, medians = out["tables"]
    assert [row[1] for row in rounds["rows"]] == ["local", "remote"]
    s = out["summary"]
    assert s["local_hit_cpu_us"] > 0 and s["remote_hit_cpu_us"] > 0 and s["remote_vs_local_cpu"] > 0
    # Every answer checked and right; the owners served the remote case from their caches.
    assert s["success_rate"] == 1 and s["owner_loads_during_remote"] == 0


@pytest.mark.procs
def test_write_bench_runs_at_a_tiny_size():
    if not shutil.which("wrk"):
        pytest.skip("the write bench needs wrk")
    from tests.perf import bench_write

    out = bench_write.run(True, seconds=1, get_keys=50)
    raw, through, mix = out["tables"]
    assert [row[0] for row in through["rows"]] == ["PUT c16", "PUT c64", "floor: bare httptools, 204 at once c64",
                                                   "floor: bare httptools + group commit c64", "pure GET c64",
                                                   "90/10 mix c64"]
    s = out["summary"]
    assert s["raw_sqlite.one_row_commits_per_s"] > 0 and s["raw_sqlite.rows_per_s_100_per_commit"] > 0
    assert s["put_c64.rps"] > 0 and s["put_c64.non2xx"] == 0 and s["put_c64.rows_per_commit"] >= 1
    assert s["mix.gets_per_s"] > 0 and s["pure_get.gets_per_s"] > 0
    # The commit floor commits what it acknowledges (the warm-up's rows are in the file too).
    assert s["floor_http.rps"] > 0 and s["floor_commit.rps"] > 0
    assert s["floor_commit.rows_in_file"] >= s["floor_commit.acknowledged"] > 0


@pytest.mark.procs
def test_miss_bench_runs_at_a_tiny_size():
    if not shutil.which("wrk"):
        pytest.skip("the miss bench needs wrk")
    from tests.perf import bench_miss

    out = bench_miss.run(True, seconds=1, rounds=1)
    rounds, _medians = out["tables"]
    assert [row[1] for row in rounds["rows"]] == ["miss", "hit"]
    miss, hit = rounds["rows"]
    assert miss[5] >= miss[4] > 0  # every miss was a load (and one cut off at the end may be too)
    assert hit[5] == 0 and hit[4] > 0  # every hit was cached
    s = out["summary"]
    assert s["errors"] == 0 and s["misses_not_loaded"] == 0 and s["miss_cpu_us"] > 0 and s["hit_cpu_us"] > 0


def test_scale_study_runs_at_a_tiny_size():
    from tests.perf import bench_scale

    out = bench_scale.run(True, sizes=(5, 20))
    movement, cost, traffic = out["tables"]
    assert [row[0] for row in movement["rows"]] == [5, 20]
    # The consistent-hash property, checked on the project's own ring: a join or a leave
    # moves keys only to or from the host that changed, about 1/N of them.
    assert all(row[-1] == "yes" for row in movement["rows"])
    assert all(0 < row[4] < 2.5 / row[0] and 0 < row[5] < 2.5 / row[0] for row in movement["rows"])
    # Every other member gets one invalidation per write: the pool's own peer table, counted.
    assert [row[-1] for row in traffic["rows"]] == [4, 19]
    assert all(row[2] > row[3] > 0 for row in traffic["rows"])  # a PUT event carries the value


def test_packed_bench_runs_at_a_tiny_size():
    from tests.perf import bench_packed

    out = bench_packed.run(True, n=30)
    (t,) = out["tables"]
    assert [row[0] for row in t["rows"]] == list(bench_packed.CODECS)
    assert out["summary"]["lz4_pct_of_raw"] < out["summary"]["none_pct_of_raw"]


def test_not_measured_cells_show_as_a_dash_in_a_right_aligned_column():
    from tests.perf.common import format_table, table

    text = format_table(table("t", ["codec", "MB/s"], [["none", None], ["lz4", 1234.5]]))
    assert text.splitlines()[-2:] == ["none       –", "lz4    1,234"]


def test_plots_are_named_per_run_and_line_charts_use_integer_ticks_from_zero(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    from tests.perf import common

    monkeypatch.setattr(common, "OUT_DIR", str(tmp_path))
    assert common.plot_path("scaling.png") == str(tmp_path / f"scaling-{common.RUN_STAMP}.png")
    fig = common.line_figure("t", "workers", "req/s", {"geecache": ([1, 2, 3, 4], [900.0, 1700.0, 2300.0, 2600.0])})
    try:
        ax = fig.axes[0]
        lo, hi = ax.get_xlim()
        assert all(float(x).is_integer() for x in ax.get_xticks() if lo <= x <= hi)
        assert ax.get_ylim()[0] == 0
    finally:
        plt.close(fig)
    path = common.plot_bars("bars.png", "t", [{"title": "a", "ylabel": "y", "categories": ["x", "y"],
                                               "series": {"s": [1.0, None]}}])
    assert path == str(tmp_path / f"bars-{common.RUN_STAMP}.png") and Path(path).is_file()


def test_policy_bench_runs_tiny():
    from tests.perf import bench_policy
    out = bench_policy.run(quick=True, n_req=3_000)
    hit_table = out["tables"][0]
    assert [row[0] for row in hit_table["rows"]] == [t for t, _ in bench_policy.TRACES]
    assert "arena s3fifo" in hit_table["columns"]
    assert all(0 <= float(cell) <= 1 for row in hit_table["rows"] for cell in row[1:])


@pytest.mark.procs
def test_unknown_bench_is_refused():
    r = subprocess.run([sys.executable, "tests/perf/main.py", "nosuch"], cwd=str(REPO),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert "Traceback" not in r.stderr


def test_plot_and_json_paths_are_shown_alike_from_any_directory(tmp_path, monkeypatch):
    from tests.perf import common, main

    monkeypatch.chdir(tmp_path)  # not the repository: a relpath from here would be ../../...
    out = os.path.join(common.OUT_DIR, "http-20261203-120000.json")
    assert main.shown_path(out) == "tests/perf/out/http-20261203-120000.json"
    assert main.shown_path("relative.png") == "relative.png"


def test_the_arena_plot_names_what_it_measured_and_every_policy():
    text = (REPO / "tests" / "perf" / "bench_arena.py").read_text()
    assert "remote caches" not in text  # the title is built from the backends measured
    assert '("lru", "lru2", "s3fifo")' in text


def test_scaling_layout_keeps_wrk_off_the_server_cores_when_it_can():
    from tests.perf.bench_scaling import plan_layout

    one, two = plan_layout(1, (0, 1)), plan_layout(2, (0, 1))
    assert (one.server, one.load, one.disjoint) == ((0,), (1,), True)  # a clean per-core figure
    assert (two.server, two.load, two.disjoint) == ((0, 1), (1,), False)
    assert "shared with wrk" in two.describe() and "shared" not in one.describe()
    big = plan_layout(12, tuple(range(16)))
    assert big.disjoint and not set(big.server) & set(big.load) and len(big.load) == 4
    assert not plan_layout(13, tuple(range(16))).disjoint
    assert not plan_layout(1, (3,)).disjoint  # one CPU: nothing to separate


@pytest.mark.procs
def test_scaling_arena_only_run_counts_per_op_and_a_hit_stores_no_shared_line_twice():
    from tests.perf import bench_scaling

    rows = bench_scaling.run_arena_only(0.2, 3_000, procs_list=(1, 2), gets_each=2_000)
    assert [(r["mode"], r["procs"]) for r in rows] == [("hot", 1), ("hot", 2), ("disjoint", 1),
                                                       ("disjoint", 2), ("hits only", 1), ("hits only", 2)]
    for r in rows[:-2]:
        assert r["ops"] > 0 and r["loads"] > 0 and r["cpu"] > 0  # the deletes made reloads
        assert r["flight_full"] == 0
    # After a set clears its reference byte, the first hit raises it and no later one stores it
    # again (lru counts to 1): at most one shared-line store per key, whatever the hit count.
    for hits_only, procs in zip(rows[-2:], (1, 2)):
        assert hits_only["hits"] == procs * 2_000 and hits_only["cpu_us"] > 0
        assert 0 < hits_only["ref_stores"] <= bench_scaling.HOT_KEYS
    table_rows = bench_scaling.arena_rows(rows)
    assert len(table_rows) == 4 and all(row[3] > 0 for row in table_rows)  # CPU µs per op


@pytest.mark.procs
def test_scaling_bench_runs_at_a_tiny_size():
    if not shutil.which("wrk"):
        pytest.skip("the scaling bench's per-core figures need wrk")
    from tests.perf import bench_scaling

    out = bench_scaling.run(True, worker_counts=(1, 2), go_procs=(), arena_procs=(2,), reuseport=False)
    main, contention, arena, hits_only, shared = out["tables"][:5]
    assert [row[:2] for row in main["rows"]] == [["geecache", 1], ["geecache", 2]]
    assert main["rows"][0][7] == 1.0  # efficiency is relative to 1 worker
    assert all(row[5] > 0 and row[6] > 0 for row in main["rows"])  # µs per hit, req/s per core
    if len(os.sched_getaffinity(0)) >= 2:
        assert "shared" not in main["rows"][0][2] and "|" in main["rows"][0][2]
    assert "Amdahl" not in json.dumps(out)
    # Every request a hit: nothing waits, nothing collides in the flight table.
    assert [row[0] for row in contention["rows"]] == [1, 2]
    assert all(row[5] == row[6] == row[7] == 0 for row in contention["rows"])
    assert {row[0] for row in arena["rows"]} == {"hot", "disjoint"}
    assert [row[0] for row in hits_only["rows"]] == [1, 2]
    assert "per hit" in shared["rows"][-1][1]
