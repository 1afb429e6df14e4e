"""HTTP throughput of cache hits against a bare aiohttp app, at 1 and 2 workers.

    python tests/perf/bench_http.py [--quick]

The load generator is ``wrk`` when on PATH (Debian/Ubuntu: ``apt-get install
wrk``; macOS: ``brew install wrk``), else a bounded aiohttp client in a
separate process (slower, so figures from the two are not comparable).
Both servers run in the same conditions: prefork on one shared socket, the
same event loop (uvloop when importable), no access log, a body of the same
size.  The baseline is measured in the same run, so only the ratios carry
from machine to machine:

- ``hit_vs_bare_{1,2}w``: GeeCache cache-hit req/s over the bare app's at
  equal workers (target >= 0.95).
- ``scale_2w_1w_geecache`` vs ``scale_2w_1w_bare``: how each gains from a
  second worker (target: GeeCache's >= the bare app's).
- ``reuseport_vs_shared`` and ``uvloop_vs_asyncio`` (full run only): the
  measurements behind the supervisor's defaults.

On a 2-core box the load generator shares the cores with the servers, so a
second worker cannot double the throughput there; the ratios against the
bare app still compare like with like.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import statistics
import socket
import subprocess
import sys
import tempfile
import time

PERF_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(PERF_DIR))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from tests.perf.common import load_generator, plot_lines, progress, result, table  # noqa: E402
from tests.support.net import free_port, wait_for_port  # noqa: E402

#: The demo key and its value: both servers answer with these 3 bytes.
KEY, VALUE = "Tom", b"630"
CONNECTIONS = 32


# -- servers ----------------------------------------------------------------------------


class Server:
    """A server process (its own process group) on a port; stopped by pid."""

    def __init__(self, cmd: list[str], port: int, env: dict | None = None) -> None:
        self.port = port
        self._log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env={**os.environ, **(env or {})},
                                     stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def wait_ready(self, path: str, expect: bytes, timeout: float = 30.0) -> None:
        import http.client

        wait_for_port(self.port, timeout=timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", path)
                resp = conn.getresponse()
                if resp.status == 200 and resp.read() == expect:
                    return
            except OSError:
                pass
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        self.stop()
        self._log.seek(0)
        raise RuntimeError(f"server did not answer {path}: {self._log.read().decode(errors='replace')[-2000:]}")

    def cpu_seconds(self) -> float:
        """User+system CPU of the server process and its live children so far."""
        pids = [self.proc.pid]
        try:
            with open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children") as f:
                pids += [int(p) for p in f.read().split()]
        except OSError:
            pass
        ticks = 0
        for pid in pids:
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
        return ticks / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()


def start_geecache(workers: int, data_dir: str, *, reuseport: bool = False, uvloop: bool = True) -> Server:
    """The real supervisor serving the demo group; the key is loaded once so the run is all hits."""
    port = free_port()
    cmd = [sys.executable, os.path.join(REPO_ROOT, "supervisor.py"), "--port", str(port),
           "--workers", str(workers), "--data-dir", data_dir, "--arena", "64MiB"]
    if reuseport:
        cmd.append("--reuseport")
    env = {"GEECACHE_LOG_LEVEL": "WARNING", "GEECACHE_UVLOOP": "1" if uvloop else "0"}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    server = Server(cmd, port, env)
    server.wait_ready(f"/api?key={KEY}", VALUE)
    return server


def start_bare(workers: int, *, uvloop: bool = True) -> Server:
    """The baseline: a bare aiohttp app answering the same bytes, prefork on a shared socket."""
    port = free_port()
    server = Server([sys.executable, os.path.abspath(__file__), "--bare-server", str(port), str(workers)],
                    port, {"GEECACHE_UVLOOP": "1" if uvloop else "0"})
    server.wait_ready(f"/api?key={KEY}", VALUE)
    return server


def bare_server_main(port: int, workers: int) -> None:
    """Entry of the baseline server process: bind once, fork *workers*, serve a constant."""
    from aiohttp import web

    from workers.worker import new_event_loop

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(1024)

    async def handler(request):
        return web.Response(body=VALUE, content_type="application/octet-stream")

    def serve() -> None:
        app = web.Application()
        app.router.add_get("/api", handler)
        loop = new_event_loop()

        async def main():
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.SockSite(runner, sock).start()
            stop = loop.create_future()
            loop.add_signal_handler(signal.SIGTERM, stop.set_result, None)
            await stop
            await runner.cleanup()

        loop.run_until_complete(main())

    pids = []
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                serve()
                code = 0
            finally:
                os._exit(code)
        pids.append(pid)
    signal.signal(signal.SIGTERM, lambda *_: [os.kill(p, signal.SIGTERM) for p in pids])
    for pid in pids:
        while True:
            try:
                os.waitpid(pid, 0)
                break
            except InterruptedError:
                continue


# -- load -------------------------------------------------------------------------------


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    return float(m.group(1)) * _UNITS[m.group(2)]


def run_wrk(url: str, seconds: float, connections: int = CONNECTIONS) -> dict:
    """req/s, p50 and p99 (ms) from one wrk run with one thread."""
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency", url],
                         capture_output=True, text=True, timeout=seconds + 30).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out).group(1))
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if non2xx:
        raise RuntimeError(f"{non2xx.group(1)} error responses from {url}")
    return {"rps": rps, "p50_ms": p50, "p99_ms": p99}


def aiohttp_load_main(url: str, seconds: float, connections: int) -> None:
    """Fallback load generator (a separate process): keep-alive GETs for *seconds*."""
    import asyncio

    import aiohttp

    async def main():
        latencies = []
        deadline = time.perf_counter() + seconds
        connector = aiohttp.TCPConnector(limit=connections)
        async with aiohttp.ClientSession(connector=connector) as session:
            async def client():
                while time.perf_counter() < deadline:
                    t0 = time.perf_counter()
                    async with session.get(url) as resp:
                        await resp.read()
                        if resp.status != 200:
                            raise RuntimeError(f"status {resp.status}")
                    latencies.append(time.perf_counter() - t0)
            started = time.perf_counter()
            await asyncio.gather(*(client() for _ in range(connections)))
            elapsed = time.perf_counter() - started
        latencies.sort()
        print(json.dumps({"rps": len(latencies) / elapsed,
                          "p50_ms": latencies[len(latencies) // 2] * 1e3,
                          "p99_ms": latencies[int(len(latencies) * 0.99)] * 1e3}))

    asyncio.run(main())


def run_load(url: str, seconds: float) -> dict:
    """One measurement with the best generator available."""
    if shutil.which("wrk"):
        return run_wrk(url, seconds)
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--load", url, str(seconds),
                          str(CONNECTIONS)], capture_output=True, text=True, timeout=seconds + 60, check=True)
    return json.loads(out.stdout)


def measure(start, seconds: float, warmup: float) -> dict:
    """Start a server, warm it, measure, stop it."""
    server = start()
    try:
        url = f"http://127.0.0.1:{server.port}/api?key={KEY}"
        run_load(url, warmup)
        cpu0 = server.cpu_seconds()
        r = run_load(url, seconds)
        # CPU per request is robust to other load on the box, where req/s is not.
        r["cpu_us"] = (server.cpu_seconds() - cpu0) * 1e6 / (r["rps"] * seconds)
        return r
    finally:
        server.stop()


# -- the bench --------------------------------------------------------------------------


def run(quick: bool) -> dict:
    seconds, warmup = (3, 1) if quick else (6, 1)
    # Rounds interleave the servers, so drift on a shared box hits every case alike;
    # each figure is the median over the rounds.
    rounds = 1 if quick else 3
    data_dir = tempfile.mkdtemp(prefix="geecache-bench-")
    progress(f"load generator: {load_generator()}, {CONNECTIONS} connections, {seconds}s per run")
    cases = [
        ("geecache", 1, "shared socket, uvloop", lambda: start_geecache(1, data_dir)),
        ("bare aiohttp", 1, "shared socket, uvloop", lambda: start_bare(1)),
        ("geecache", 2, "shared socket, uvloop", lambda: start_geecache(2, data_dir)),
        ("bare aiohttp", 2, "shared socket, uvloop", lambda: start_bare(2)),
    ]
    if not quick:
        cases += [
            ("geecache", 2, "SO_REUSEPORT, uvloop", lambda: start_geecache(2, data_dir, reuseport=True)),
            ("geecache", 2, "shared socket, asyncio loop", lambda: start_geecache(2, data_dir, uvloop=False)),
            ("bare aiohttp", 2, "shared socket, asyncio loop", lambda: start_bare(2, uvloop=False)),
        ]
    runs: dict[tuple, list[dict]] = {}
    try:
        for n in range(rounds):
            for name, workers, mode, start in cases:
                progress(f"round {n + 1}/{rounds}: {name}, {workers} worker(s), {mode}")
                runs.setdefault((name, workers, mode), []).append(measure(start, seconds, warmup))
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    got = {case: {k: statistics.median(r[k] for r in rs) for k in ("rps", "p50_ms", "p99_ms", "cpu_us")}
           for case, rs in runs.items()}
    rows = [[name, workers, mode, r["rps"], r["p50_ms"], r["p99_ms"], r["cpu_us"]]
            for (name, workers, mode), r in got.items()]
    base = "shared socket, uvloop"
    g1, g2 = got[("geecache", 1, base)]["rps"], got[("geecache", 2, base)]["rps"]
    b1, b2 = got[("bare aiohttp", 1, base)]["rps"], got[("bare aiohttp", 2, base)]["rps"]
    summary = {
        "geecache_hit_rps_1w": g1, "geecache_hit_rps_2w": g2, "bare_rps_1w": b1, "bare_rps_2w": b2,
        "hit_vs_bare_1w": g1 / b1, "hit_vs_bare_2w": g2 / b2,
        "scale_2w_1w_geecache": g2 / g1, "scale_2w_1w_bare": b2 / b1,
        # CPU per request does not depend on what else runs on the box: the steadier ratio.
        "bare_vs_hit_cpu_1w": got[("bare aiohttp", 1, base)]["cpu_us"] / got[("geecache", 1, base)]["cpu_us"],
    }
    if not quick:
        summary["reuseport_vs_shared"] = got[("geecache", 2, "SO_REUSEPORT, uvloop")]["rps"] / g2
        summary["uvloop_vs_asyncio"] = g2 / got[("geecache", 2, "shared socket, asyncio loop")]["rps"]
        summary["bare_uvloop_vs_asyncio"] = b2 / got[("bare aiohttp", 2, "shared socket, asyncio loop")]["rps"]
    tables = [
        table(f"Cache-hit GET vs bare aiohttp ({load_generator()}, {CONNECTIONS} conns, {len(VALUE)} B body, "
              f"median of {rounds} interleaved rounds)",
              ["server", "workers", "mode", "req/s", "p50 ms", "p99 ms", "server CPU us/req"], rows),
        table("Ratios (targets: hit/bare >= 0.95; geecache 2w/1w >= bare 2w/1w)", ["ratio", "value"],
              [[k, v] for k, v in summary.items() if "_vs_" in k or k.startswith("scale")]),
    ]
    series = {
        f"{name} {pct}": ([1, 2], [got[(name, w, base)][f"{pct}_ms"] for w in (1, 2)])
        for name in ("geecache", "bare aiohttp") for pct in ("p50", "p99")
    }
    plot = plot_lines("latency.png", f"Cache-hit latency ({load_generator()}, {CONNECTIONS} conns)",
                      "workers", "latency (ms)", series)
    return result("http", tables, summary, [plot] if plot else [])


def main(argv: list[str]) -> None:
    if argv[:1] == ["--bare-server"]:
        bare_server_main(int(argv[1]), int(argv[2]))
    elif argv[:1] == ["--load"]:
        aiohttp_load_main(argv[1], float(argv[2]), int(argv[3]))
    else:
        from tests.perf.common import print_result

        print_result(run("--quick" in argv))


if __name__ == "__main__":
    main(sys.argv[1:])
