"""The live dashboard: its JSON on a real host, its numbers moving with
traffic, ring shares, and the page rendered by a real headless Chromium when installed."""

from __future__ import annotations

import html
import os
import random
import re
import shutil
import subprocess

import pytest

from geecache.observability import latency, procstat
from geecache.cluster.consistenthash import Ring
from workers.dashboard import ring_digest
from tests.support.cluster import static_hosts
from tests.support.proc import start_supervisor, wait_until

CHROMIUM = next((p for p in ("/usr/bin/chromium", shutil.which("chromium") or "",
                             shutil.which("chromium-browser") or "") if p and os.path.exists(p)), None)


def _traffic(h, n: int, prefix: str = "k") -> None:
    for i in range(n):
        h.get("/api?key=Tom")
        h.get(f"/api?key={prefix}{i}")  # not in the demo: a load each (not found, not cached)


# -- pure parts ---------------------------------------------------------------------------


def test_ring_shares_are_the_arcs_keys_fall_in():
    ring = Ring()
    ring.add("10.0.0.1:8001", "10.0.0.2:8001", "10.0.0.3:8001")
    shares = ring.shares()
    assert set(shares) == set(ring.nodes) and abs(sum(shares.values()) - 1) < 1e-9
    rng = random.Random(12)
    n = 60_000
    owned = dict.fromkeys(ring.nodes, 0)
    for _ in range(n):
        owned[ring.get(str(rng.getrandbits(64)))] += 1
    for node, share in shares.items():
        # Sampling error of 60,000 keys: about 0.2 percentage points; 1.5 is generous.
        assert abs(owned[node] / n - share) < 0.015, (node, owned[node] / n, share)
    assert Ring().shares() == {}
    alone = Ring()
    alone.add("a:1")
    assert alone.shares() == {"a:1": 1.0}


def test_the_ring_digest_names_a_member_list_alike_on_every_host():
    # Hosts count ring versions locally (3 on one, 8 on another for one list): the digest is shared.
    assert ring_digest(["b:1", "a:1"]) == ring_digest(["a:1", "b:1"]) != ring_digest(["a:1"])
    assert re.fullmatch(r"[0-9a-f]{8}", ring_digest([]))


def test_latency_tallies_drain_once():
    t = latency.Tallies((0.001, 0.01))
    t.observe("g", 0.0005)
    t.observe("g", 0.005)
    t.observe("g", 1.0)
    [(label, counts)] = t.drain()
    assert label == "g" and counts[0] == 3 and counts[2:] == [1, 1, 1]
    assert abs(counts[1] - 1.0055) < 1e-9
    assert t.drain() == []


def test_procstat_reads_this_process():
    me = procstat.read(os.getpid())
    assert me is not None and me.cpu_seconds > 0 and me.resident_bytes > 1 << 20
    assert me.open_fds and me.open_fds > 2 and me.start_time > 1e9
    assert procstat.read(2 ** 22 + 12345) is None  # above pid_max's default: no such process


# -- a real host --------------------------------------------------------------------------


@pytest.mark.procs
def test_dashboard_json_shape_and_numbers_move(tmp_path):
    h = start_supervisor(tmp_path, workers=2)
    try:
        first = h.admin_json("/dashboard.json")
        assert set(first) >= {"time", "pid", "version", "python", "arena_bytes", "workers_configured",
                              "ring", "groups", "processes", "breakers"}
        assert first["workers_configured"] == 2 and first["arena_bytes"] == 32 << 20
        [g] = first["groups"]
        assert g["name"] == "scores" and g["max_bytes"] > 0
        for field in ("gets", "loads", "peer_errors", "local_hits", "hot_hits", "peer_hits", "bytes",
                      "entries", "hot_bytes", "hot_entries", "hit_rate"):
            assert isinstance(g[field], (int, float)), field
        assert first["ring"] == {"version": 0, "self": None, "members": [],  # standalone
                                 "digest": ring_digest([])}
        assert first["uptime_s"] is not None and 0 <= first["uptime_s"] < 600
        assert first["shm"]["size"] >= first["shm"]["free"] > 0
        assert set(first["http"]) == {"by_status", "api_buckets", "connections_open"}
        workers = sorted(h.workers())
        # Every worker listed by its heartbeat cell (both ready: wait_ready saw them serve).
        def listed():
            doc = h.admin_json("/dashboard.json")
            ws = [p for p in doc["processes"] if p["kind"] == "worker"]
            return doc if sorted(p["pid"] for p in ws) == workers and all(p["ready"] for p in ws) else None
        doc = wait_until(listed, 10, what="both workers listed ready")
        by_kind = {p["process"]: p for p in doc["processes"]}
        assert set(by_kind) == {"worker-0", "worker-1", "supervisor"}
        assert by_kind["supervisor"]["pid"] == h.proc.pid
        for name in ("worker-0", "worker-1"):
            p = by_kind[name]
            assert 0 <= p["heartbeat_age"] < 30 and p["rss_bytes"] > 1 << 20 and p["cpu_seconds"] >= 0
        _traffic(h, 20)
        after = h.admin_json("/dashboard.json")
        [g2] = after["groups"]
        assert g2["gets"] >= g["gets"] + 40 and g2["loads"] >= g["loads"] + 20
        assert g2["local_hits"] > g["local_hits"] and g2["entries"] >= 1 and g2["bytes"] > 0
        assert after["time"] > first["time"]
    finally:
        assert h.stop() == 0


@pytest.mark.procs
def test_dashboard_page_is_self_contained(tmp_path):
    h = start_supervisor(tmp_path, workers=1)
    try:
        status, headers, body = h.admin_request("GET", "/")
        assert status == 200 and headers["content-type"].startswith("text/html")
        text = body.decode()
        assert "dashboard.json" in text and "<script>" in text
        # Nothing fetched from elsewhere: no src/href to another origin, no @import, no font.
        assert not re.search(r'(src|href)\s*=\s*["\']?(https?:)?//', text, re.I), "external resource"
        assert "@import" not in text and "@font-face" not in text and "url(" not in text
        assert len(body) < 20_000
        status, headers, _ = h.admin_request("GET", "/dashboard.json")
        assert status == 200 and headers["content-type"].startswith("application/json")
        assert h.get("/")[0] == 404  # the data port has no dashboard
    finally:
        assert h.stop() == 0


@pytest.mark.procs
def test_dashboard_shows_the_ring_and_each_members_share(tmp_path):
    with static_hosts(tmp_path, 2, exit_zero=True) as hosts:
        ports = [h.port for h in hosts]
        doc = hosts[0].admin_json("/dashboard.json")
        members = doc["ring"]["members"]
        # Static peers are ring members as listed (URLs).
        assert sorted(m["address"] for m in members) == sorted(f"http://127.0.0.1:{p}" for p in ports)
        assert abs(sum(m["share"] for m in members) - 1) < 1e-3
        assert all(0.3 < m["share"] < 0.7 for m in members)
        assert [m["self"] for m in members].count(True) == 1
        assert doc["ring"]["self"] == f"http://127.0.0.1:{ports[0]}" and doc["ring"]["version"] >= 1


# -- a real browser -----------------------------------------------------------------------


def _render(url: str, profile, budget_ms: int = 3000) -> str:
    """The DOM Chromium has after running the page for *budget_ms* of virtual time."""
    out = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={profile}", f"--virtual-time-budget={budget_ms}", "--dump-dom", url],
        capture_output=True, timeout=90, check=True)
    return out.stdout.decode()


def _cell(dom: str, cls: str) -> str:
    m = re.search(r'<tr data-group="scores">.*?<td class="%s(?: [^"]*)?">([^<]*)</td>' % cls, dom, re.S)
    assert m, f"no {cls} cell in:\n{dom[:4000]}"
    return html.unescape(m.group(1))


@pytest.mark.procs
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_the_page_renders_in_chromium_and_its_numbers_change(tmp_path):
    h = start_supervisor(tmp_path, workers=2)
    try:
        url = f"http://127.0.0.1:{h.admin_port}/"
        _traffic(h, 5)
        first = _render(url, tmp_path / "profile1")
        refreshes = int(re.search(r'id="refreshes">(\d+)<', first).group(1))
        assert refreshes >= 2, "the page polled its JSON more than once"
        assert "live" in re.search(r'id="state"[^>]*>([^<]*)<', first).group(1)
        gets1 = int(_cell(first, "gets").replace(",", ""))
        assert gets1 >= 10 and _cell(first, "hit_rate").endswith("%")
        assert re.search(r'<td class="pid">\d+</td>', first) and "worker-1" in first
        assert re.search(r'<td class="heartbeat_age[^"]*">\d+\.\d\d s</td>', first)
        _traffic(h, 10, prefix="later")
        second = _render(url, tmp_path / "profile2")
        gets2 = int(_cell(second, "gets").replace(",", ""))
        assert gets2 >= gets1 + 20
        assert int(_cell(second, "loads").replace(",", "")) > int(_cell(first, "loads").replace(",", ""))
    finally:
        assert h.stop() == 0


@pytest.mark.etcd
@pytest.mark.procs
def test_the_registrar_is_listed_with_its_heartbeat(tmp_path, etcd_server):
    # wait_ready counts children: the one worker and the registrar.
    h = start_supervisor(tmp_path, "--etcd", etcd_server.endpoint, workers=1, wait=False)
    try:
        h.wait_ready(2)

        def registrar():
            doc = h.admin_json("/dashboard.json")
            found = [p for p in doc["processes"] if p["kind"] == "registrar"]
            return doc if found and found[0]["ready"] else None
        doc = wait_until(registrar, 20, what="the registrar listed ready")
        [reg] = [p for p in doc["processes"] if p["kind"] == "registrar"]
        assert reg["process"] == "registrar" and reg["slot"] is None and 0 <= reg["heartbeat_age"] < 30
        assert reg["pid"] in h.workers() and reg["pid"] != h.proc.pid
        assert [p["process"] for p in doc["processes"] if p["kind"] == "worker"] == ["worker-0"]
        # Registered: the ring holds this host, which owns every key.
        members = wait_until(lambda: h.admin_json("/dashboard.json")["ring"]["members"], 20,
                             what="the ring from etcd")
        assert [(m["address"], m["share"], m["self"]) for m in members] == [(f"127.0.0.1:{h.port}", 1.0, True)]
        text = h.admin_get("/metrics")[1].decode()
        assert 'geecache_child_heartbeat_age_seconds{process="registrar"}' in text
        assert 'geecache_process_resident_memory_bytes{process="registrar"}' in text
    finally:
        assert h.stop() == 0


def _load(h, stop, max_requests: int = 200_000) -> None:
    """Hits and misses until *stop* is set (bounded in count too), over one keep-alive connection."""
    import http.client
    import itertools

    conn = http.client.HTTPConnection("127.0.0.1", h.port, timeout=30)
    try:
        for i in itertools.islice(itertools.count(), max_requests // 2):
            if stop.is_set():
                return
            for path in ("/api?key=Tom", f"/api?key=miss{i}"):
                conn.request("GET", path)
                conn.getresponse().read()
    finally:
        conn.close()


@pytest.mark.procs
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_charts_status_memory_owner_and_no_overflow_at_1400px_in_real_time(tmp_path):
    import threading

    from tests.support.browser import Browser

    h = start_supervisor(tmp_path, workers=2)
    stop = threading.Event()
    loader = threading.Thread(target=_load, args=(h, stop))
    browser = None
    try:
        loader.start()
        browser = Browser(CHROMIUM, tmp_path / "profile", width=1400, height=1100)
        browser.goto(f"http://127.0.0.1:{h.admin_port}/")
        # Real time: polls a second apart, so rates are rates (virtual time shows every one as 0).
        browser.wait_for("+document.getElementById('refreshes').textContent >= 5", 90, "five polls")
        browser.wait_for("parseFloat(document.getElementById('v-gets').textContent.replace(/,/g, '')) > 0",
                         60, "a gets/s figure above 0")
        values = browser.evaluate("""(() => {
            const t = (id) => document.getElementById(id).textContent;
            const rows = [...document.querySelectorAll('#statuses tbody tr')].map((r) => r.dataset.status);
            const drawn = [...document.querySelectorAll('canvas')].map((c) => {
              const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
              let blue = 0; for (let i = 0; i < d.length; i += 4) if (d[i + 2] > 180 && d[i] < 120) blue++;
              return blue; });
            return {gets: t('v-gets'), hits: t('v-hits'), p99: t('v-p99'), conns: t('v-conns'),
                    evictions: t('v-evictions'), uptime: t('uptime'), fill: t('fill'), shm: t('shm'),
                    ring: t('ringver'), statuses: rows, drawn: drawn};
        })()""")
        assert values["hits"].endswith("%") and values["uptime"] != "–", values
        assert re.fullmatch(r"[\d.]+ (µs|ms)", values["p99"]), values
        assert int(values["conns"]) >= 1, values  # the load's keep-alive connection at least
        assert values["evictions"] != "–", values
        assert {"200", "404"} <= set(values["statuses"]), values
        assert "cached" in values["fill"] and " of " in values["shm"], values
        assert re.search(r"ring [0-9a-f]{8}", values["ring"]), values
        assert sum(1 for n in values["drawn"] if n > 0) >= 4, values  # lines drawn in the canvases
        # The key-owner lookup: a standalone host owns every key.
        browser.evaluate("document.getElementById('key').value = 'Tom';"
                         "document.getElementById('lookup').requestSubmit(); true")
        owner = browser.wait_for("(() => { const t = document.getElementById('owner').textContent;"
                                 " return t.startsWith('the member') ? '' : t; })()", 30, "the owner")
        assert owner == "this host (no peers)"
        # At 1,400 px nothing spills out of its card: every table fits its section.
        spills = browser.evaluate("""[...document.querySelectorAll('section')].filter((s) => {
            const box = s.getBoundingClientRect();
            return s.scrollWidth > s.clientWidth + 1 ||
              [...s.querySelectorAll('table')].some((t) => t.getBoundingClientRect().right > box.right + 0.5);
        }).map((s) => s.querySelector('h2').textContent)""")
        shot = browser.screenshot(tmp_path / "dashboard-1400.png")  # kept for a look, even on failure
        assert spills == [], spills
        assert shot.stat().st_size > 20_000
    finally:
        stop.set()
        loader.join(60)
        if browser is not None:
            browser.close()
        assert h.stop() == 0


@pytest.mark.procs
def test_the_cluster_overview_has_every_members_figures_and_one_ring(tmp_path):
    browser = None
    with static_hosts(tmp_path, 2, "--auth-token", "tok", exit_zero=True) as hosts:
        ports = [h.port for h in hosts]
        a, b = hosts
        try:
            for i in range(30):
                b.get(f"/api?key=b{i}")  # figures only B's own counters can show
            doc = a.admin_json("/cluster/overview")
            by = {h["address"]: h for h in doc["hosts"]}
            assert set(by) == {f"http://127.0.0.1:{p}" for p in ports}
            assert [h["self"] for h in doc["hosts"]] == [True, False]
            assert doc["agreed"] and by[f"http://127.0.0.1:{ports[1]}"]["ring_digest"] == doc["ring_digest"]
            other = by[f"http://127.0.0.1:{ports[1]}"]
            assert "error" not in other and other["gets"] >= 30 and other["workers_ready"] == 1
            assert other["uptime_s"] is not None and other["ring_members"] == 2
            # The figures are behind the peer token on the data port.
            assert b.get("/_geecache")[0] == 401
            if CHROMIUM is not None:
                from tests.support.browser import Browser

                browser = Browser(CHROMIUM, tmp_path / "profile", width=1400, height=1300)
                browser.goto(f"http://127.0.0.1:{a.admin_port}/")
                rows = browser.wait_for("(() => { const r = [...document.querySelectorAll('#cluster tbody tr')]"
                                        ".filter((t) => t.dataset.host); return r.length === 2 ? r.length : 0; })()",
                                        60, "both hosts in the overview")
                assert rows == 2
                assert browser.evaluate("document.getElementById('agreed').textContent").startswith(
                    "every member routes by ring " + doc["ring_digest"])
                browser.screenshot(tmp_path / "cluster-1400.png")
            # A member gone: listed with the reason, not dropped.
            assert b.stop() == 0
            gone = wait_until(lambda: (lambda d: d if any("error" in h for h in d["hosts"]) else None)(
                a.admin_json("/cluster/overview")), 30, what="the stopped member shown unreachable")
            [down] = [h for h in gone["hosts"] if "error" in h]
            assert down["address"] == f"http://127.0.0.1:{ports[1]}" and down["error"]
        finally:
            if browser is not None:
                browser.close()
