"""Cache hits over HTTP, per server core: geecache, bare aiohttp, the old aiohttp data path, Go groupcache.

    python tests/perf/bench_http.py [--quick]

One run measures, side by side on one box, the same request (``GET
/api?key=K``, a 100-byte value, every request a hit) against:

- **geecache**: the real supervisor, its data plane (``workers/dataplane``);
- **geecache, aiohttp data path**: the same supervisor from the newest
  commit before the data plane (extracted with ``git archive`` into a temp
  dir; skipped outside a git checkout), i.e. what the data plane replaced;
- **bare aiohttp**: an aiohttp app answering a constant, prefork on a shared socket;
- **the floor**: a bare ``asyncio.Protocol`` over httptools doing one
  ``Arena.get`` per request (no routing, limits or metrics): what the data
  plane's own work is measured against;
- **Go groupcache** (the original, Debian's build), when its binary is there:
  ``$GEECACHE_GROUPCACHE_BIN``, else ``/tmp/gcgo/groupcache-bench``, else
  built into a temp dir when ``go`` and the anchors source
  (``$GEECACHE_GROUPCACHE_SRC`` or ``../shared/anchors/groupcache-go``) are
  present.  Nothing Go is in this repository.

The Python servers run 2 workers each (Go uses every core).  Load: ``wrk
-t2 -c64`` (the generator shares the cores: absolute req/s mostly measure
the box).  Around each run, the CPU time (utime + stime) of the server's
whole process tree is read from /proc, so each server is judged by **req/s
per server core** (requests / server CPU seconds) and **server CPU µs per
request**, which transfer to a bigger machine.  Servers stay up for the
whole run; rounds interleave them; figures are medians over rounds.

With the compiled hit path built, **geecache, Python hit path** is the same supervisor with
``GEECACHE_PURE_PYTHON=1``: the difference is what the C part saves per hit.

Targets: geecache >= 1.5x Go groupcache per server core; <= 12 µs
of server CPU per hit; >= 3x the aiohttp data path per server core.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time

PERF_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(PERF_DIR))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from tests.perf.common import load_generator, progress, result, table  # noqa: E402
from tests.support.net import free_port, wait_for_port  # noqa: E402

#: The key asked for: 100 characters, so the upper-casing test loader gives a 100-byte value.
KEY = "t" * 100
VALUE = KEY.upper().encode()
WORKERS = 2
THREADS, CONNECTIONS = 2, 64
#: The row of geecache with the compiled hit path switched off.
PYTHON_HIT_PATH = "geecache, Python hit path"
#: The groupcache anchor's own value is 100 bytes of 'v' whatever the key.
GO_VALUE = b"v" * 100
CONFIG = """
[[groups]]
name = "bench"
loader = "tests.support.loaders:sync_upper"
"""


# -- servers ----------------------------------------------------------------------------


def tree_cpu_seconds(pid: int) -> float:
    """User+system CPU so far of *pid* and all its descendants (Linux /proc)."""
    ticks, todo, seen = 0, [pid], set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime (all threads)
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except OSError:
            continue
    return ticks / os.sysconf("SC_CLK_TCK")


class Server:
    """A server process (its own process group) on a port; stopped by pid."""

    def __init__(self, name: str, cmd: list[str], port: int, env: dict | None = None, cwd: str = REPO_ROOT,
                 expect: bytes = VALUE) -> None:
        self.name = name
        self.port = port
        self.expect = expect
        self._log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(cmd, cwd=cwd, env={**os.environ, **(env or {})}, stdout=self._log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api?key={KEY}"

    def wait_ready(self, timeout: float = 60.0) -> "Server":
        import http.client

        try:
            wait_for_port(self.port, timeout=timeout)
        except TimeoutError:
            pass
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                conn.request("GET", f"/api?key={KEY}")
                resp = conn.getresponse()
                if resp.status == 200 and resp.read() == self.expect:
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        self._log.seek(0)
        log = self._log.read().decode(errors="replace")[-2000:]
        self.stop()
        raise RuntimeError(f"{self.name} did not answer: {log}")

    def cpu_seconds(self) -> float:
        return tree_cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)  # its own group: only what it started
                self.proc.wait(10)
        self._log.close()


def _config_file(data_dir: str) -> str:
    path = os.path.join(data_dir, "bench.toml")
    with open(path, "w") as f:
        f.write(CONFIG)
    return path


def start_geecache(workers: int, data_dir: str, *, tree: str = REPO_ROOT, admin: bool = True,
                   name: str = "geecache", uvloop: bool = True, reuseport: bool = False,
                   pure_python: bool = False) -> Server:
    """The real supervisor of *tree* serving the bench group; *admin*: the tree has an admin port.

    *pure_python*: without the compiled hit path (``GEECACHE_PURE_PYTHON=1``).
    """
    port = free_port()
    cmd = [sys.executable, os.path.join(tree, "supervisor.py"), "--port", str(port), "--workers", str(workers),
           "--data-dir", os.path.join(data_dir, f"data-{port}"), "--arena", "64MiB",
           "--config", _config_file(data_dir)]
    if admin:
        cmd += ["--admin-port", str(free_port())]
    if reuseport:
        cmd.append("--reuseport")
    env = {"GEECACHE_LOG_LEVEL": "warning", "GEECACHE_UVLOOP": "1" if uvloop else "0",
           "PYTHONPATH": tree, "GEECACHE_PURE_PYTHON": "1" if pure_python else "0"}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return Server(name, cmd, port, env, cwd=tree).wait_ready()


def start_bare(workers: int, *, uvloop: bool = True) -> Server:
    """The baseline: a bare aiohttp app answering the same bytes, prefork on a shared socket."""
    port = free_port()
    return Server("bare aiohttp", [sys.executable, os.path.abspath(__file__), "--bare-server", str(port),
                                   str(workers)], port, {"GEECACHE_UVLOOP": "1" if uvloop else "0"}).wait_ready()


def _prefork(serve, workers: int) -> None:
    """Fork *workers* children running ``serve()`` on the inherited socket; wait for all of them.

    SIGTERM to this process is passed on to every child (the bench stops servers by pid).
    """
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

    _prefork(serve, workers)


def serve_until_sigterm(loop, protocol_factory, sock: socket.socket) -> None:
    """Serve *protocol_factory* on the listening *sock* with *loop* until SIGTERM (a bench floor's child)."""
    async def main():
        server = await loop.create_server(protocol_factory, sock=sock)
        stop = loop.create_future()
        loop.add_signal_handler(signal.SIGTERM, stop.set_result, None)
        await stop
        server.close()

    loop.run_until_complete(main())


def start_floor(workers: int) -> Server:
    """The floor: a bare asyncio Protocol over httptools doing one ``Arena.get`` per request."""
    port = free_port()
    return Server("floor: bare httptools protocol + Arena.get",
                  [sys.executable, os.path.abspath(__file__), "--floor-server", str(port), str(workers)],
                  port).wait_ready()


def floor_server_main(port: int, workers: int) -> None:
    """Entry of the floor server: the issue's fifth row (no routing, no limits, no metrics)."""
    import asyncio

    import httptools

    from geecache.shm import Arena
    from workers.worker import new_event_loop

    arena = Arena.create(16 << 20)
    arena.configure_group("bench", 4 << 20)
    arena.set("bench", KEY, VALUE)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(1024)
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: "

    class Floor(asyncio.Protocol):
        def connection_made(self, transport):
            self.t = transport
            self.p = httptools.HttpRequestParser(self)
            self.url = b""

        def data_received(self, data):
            self.p.feed_data(data)

        def on_url(self, url):
            self.url = url

        def on_message_complete(self):
            value = arena.get("bench", self.url.partition(b"key=")[2].decode())
            self.t.write(head + b"%d\r\n\r\n" % len(value) + value)

    try:
        _prefork(lambda: serve_until_sigterm(new_event_loop(), Floor, sock), workers)
    finally:
        arena.close()
        arena.unlink()


# -- the baselines that live outside this tree -------------------------------------------


def aiohttp_path_rev() -> str | None:
    """The newest commit reachable from HEAD without ``workers/dataplane``: the aiohttp data path."""
    env = os.environ.get("GEECACHE_BENCH_AIOHTTP_REV")
    if env:
        return env
    try:
        revs = subprocess.run(["git", "rev-list", "--date-order", "-n", "400", "HEAD"], cwd=REPO_ROOT,
                              capture_output=True, text=True, timeout=30, check=True).stdout.split()
        for rev in revs:
            if subprocess.run(["git", "cat-file", "-e", f"{rev}:workers/dataplane"], cwd=REPO_ROOT,
                              capture_output=True, timeout=30).returncode != 0:
                return rev
    except (OSError, subprocess.SubprocessError):
        pass
    return None


def extract_tree(rev: str, into: str) -> str:
    """The files of commit *rev* under *into* (``git archive``: the repository is not touched)."""
    archive = os.path.join(into, "tree.tar")
    subprocess.run(["git", "archive", "-o", archive, rev], cwd=REPO_ROOT, check=True, timeout=120)
    tree = os.path.join(into, "tree")
    with tarfile.open(archive) as tar:
        tar.extractall(tree, filter="data")
    return tree


def groupcache_binary(tmp: str) -> str | None:
    """The Go groupcache anchor's binary: given, prebuilt, or built now into *tmp* (GOPATH mode)."""
    for path in (os.environ.get("GEECACHE_GROUPCACHE_BIN"), "/tmp/gcgo/groupcache-bench"):
        if path and os.access(path, os.X_OK):
            return path
    go = shutil.which("go")
    src = os.environ.get("GEECACHE_GROUPCACHE_SRC") or os.path.join(REPO_ROOT, "..", "shared", "anchors",
                                                                     "groupcache-go")
    if not go or not os.path.isfile(os.path.join(src, "main.go")) or not os.path.isdir("/usr/share/gocode"):
        return None
    pkg = os.path.join(tmp, "gopath", "src", "anchorsgc")
    os.makedirs(pkg)
    shutil.copy(os.path.join(src, "main.go"), pkg)
    out = os.path.join(tmp, "groupcache-bench")
    env = {**os.environ, "GO111MODULE": "off", "GOPATH": f"{tmp}/gopath:/usr/share/gocode",
           "GOCACHE": os.path.join(tmp, "gocache")}
    if subprocess.run([go, "build", "-o", out, "."], cwd=pkg, env=env, capture_output=True,
                      timeout=600).returncode != 0:
        return None
    return out


def start_groupcache(binary: str, *, name: str = "Go groupcache", env: dict | None = None) -> Server:
    """The Go anchor on a free port; *env* e.g. ``{"GOMAXPROCS": "1"}`` (bench_scaling)."""
    port = free_port()
    return Server(name, [binary, "-addr", f"127.0.0.1:{port}", "-max-seconds", "3600"], port, env,
                  expect=GO_VALUE).wait_ready()


# -- load -------------------------------------------------------------------------------


def run_wrk(url: str, seconds: float, threads: int = THREADS, connections: int = CONNECTIONS) -> dict:
    """Requests, wall seconds and req/s of one wrk run (errors are refused, not counted)."""
    out = subprocess.run(["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s", url],
                         capture_output=True, text=True, timeout=seconds + 60).stdout
    m = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s)", out)
    if not m:
        raise RuntimeError(f"wrk output not understood: {out[-500:]}")
    wall = float(m.group(2)) * {"us": 1e-6, "ms": 1e-3, "s": 1.0}[m.group(3)]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if bad:
        raise RuntimeError(f"{bad.group(1)} error responses from {url}")
    return {"requests": int(m.group(1)), "wall": wall, "rps": int(m.group(1)) / wall}


def aiohttp_load_main(url: str, seconds: float, connections: int) -> None:
    """Fallback load generator (a separate process): keep-alive GETs for *seconds*."""
    import asyncio

    import aiohttp

    async def main():
        count = 0
        deadline = time.perf_counter() + seconds
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections)) as session:
            async def client():
                nonlocal count
                while time.perf_counter() < deadline:
                    async with session.get(url) as resp:
                        await resp.read()
                        if resp.status != 200:
                            raise RuntimeError(f"status {resp.status}")
                    count += 1
            started = time.perf_counter()
            await asyncio.gather(*(client() for _ in range(connections)))
            wall = time.perf_counter() - started
        print(json.dumps({"requests": count, "wall": wall, "rps": count / wall}))

    asyncio.run(main())


def run_load(url: str, seconds: float, threads: int = THREADS, connections: int = CONNECTIONS) -> dict:
    """One measurement with the best generator available (*threads*: wrk's; the fallback has one)."""
    if shutil.which("wrk"):
        return run_wrk(url, seconds, threads, connections)
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--load", url, str(seconds),
                          str(connections)], capture_output=True, text=True, timeout=seconds + 60, check=True)
    return json.loads(out.stdout)


def measure_running(server: Server, seconds: float, warmup: float) -> dict:
    """Warm *server*, then one measured run: req/s, req/s per server core, server CPU µs per request."""
    run_load(server.url, warmup)
    cpu0 = server.cpu_seconds()
    r = run_load(server.url, seconds)
    cpu = server.cpu_seconds() - cpu0
    r["cpu_us"] = cpu * 1e6 / r["requests"]
    r["rps_per_core"] = r["requests"] / cpu if cpu else float("inf")
    r["cores"] = cpu / r["wall"]
    return r


# -- the bench --------------------------------------------------------------------------


def run(quick: bool) -> dict:
    seconds, warmup = (3, 1) if quick else (8, 2)
    rounds = 1 if quick else 3
    tmp = tempfile.mkdtemp(prefix="geecache-bench-")
    progress(f"load generator: {load_generator()} -t{THREADS} -c{CONNECTIONS}, {seconds}s per run, "
             f"{len(VALUE)}-byte values, {WORKERS} workers per Python server")
    servers: list[Server] = []
    notes = []
    try:
        servers.append(start_geecache(WORKERS, tmp))
        from workers.dataplane.hitpath import available

        if available():  # the same supervisor with its hit path in Python: what the C part saves
            servers.append(start_geecache(WORKERS, tmp, name=PYTHON_HIT_PATH, pure_python=True))
        rev = aiohttp_path_rev()
        if rev:
            try:
                old = extract_tree(rev, tmp)
                servers.append(start_geecache(WORKERS, tmp, tree=old, admin=False,
                                              name=f"geecache, aiohttp data path ({rev[:7]})"))
            except (OSError, subprocess.SubprocessError, RuntimeError) as exc:
                notes.append(f"aiohttp data path at {rev[:7]} not measured: {exc}")
        else:
            notes.append("aiohttp data path not measured: no git checkout or no commit without the data plane")
        servers.append(start_bare(WORKERS))
        servers.append(start_floor(WORKERS))
        binary = groupcache_binary(tmp)
        if binary:
            servers.append(start_groupcache(binary))
        else:
            notes.append("Go groupcache not measured: no binary ($GEECACHE_GROUPCACHE_BIN, "
                         "/tmp/gcgo/groupcache-bench) and none could be built")
        runs: dict[str, list[dict]] = {}
        for n in range(rounds):
            for server in servers:
                progress(f"round {n + 1}/{rounds}: {server.name}")
                runs.setdefault(server.name, []).append(measure_running(server, seconds, warmup))
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    got = {name: {k: statistics.median(r[k] for r in rs) for k in ("rps", "rps_per_core", "cpu_us", "cores")}
           for name, rs in runs.items()}
    rows = [[name, r["rps"], r["cores"], r["rps_per_core"], r["cpu_us"]] for name, r in got.items()]
    gee = got["geecache"]
    summary = {"geecache_rps": gee["rps"], "geecache_rps_per_core": gee["rps_per_core"],
               "geecache_cpu_us": gee["cpu_us"]}
    targets = [["server CPU µs per hit <= 12", gee["cpu_us"], gee["cpu_us"] <= 12]]
    for name, r in got.items():
        if name == "Go groupcache":
            summary["vs_go_per_core"] = gee["rps_per_core"] / r["rps_per_core"]
            targets.append(["per core vs Go groupcache >= 1.5x", summary["vs_go_per_core"],
                            summary["vs_go_per_core"] >= 1.5])
        elif name == PYTHON_HIT_PATH:
            summary["vs_python_hit_path_per_core"] = gee["rps_per_core"] / r["rps_per_core"]
            summary["compiled_saves_cpu_us"] = r["cpu_us"] - gee["cpu_us"]
        elif name.startswith("geecache, aiohttp"):
            summary["vs_aiohttp_path_per_core"] = gee["rps_per_core"] / r["rps_per_core"]
            targets.append(["per core vs the aiohttp data path >= 3x", summary["vs_aiohttp_path_per_core"],
                            summary["vs_aiohttp_path_per_core"] >= 3])
        elif name == "bare aiohttp":
            summary["vs_bare_aiohttp_per_core"] = gee["rps_per_core"] / r["rps_per_core"]
    tables = [
        table(f"Cache-hit GET /api?key=K, {len(VALUE)} B ({load_generator()} -t{THREADS} -c{CONNECTIONS}; "
              f"Python servers {WORKERS} workers; medians of {rounds} interleaved rounds)",
              ["server", "req/s", "server cores used", "req/s per server core", "server CPU µs/req"], rows),
        table("Targets", ["target", "measured", "met"], [[t, v, "yes" if ok else "NO"]
                                                                   for t, v, ok in targets]),
    ]
    if notes:
        tables.append(table("Notes", ["note"], [[n] for n in notes]))
    return result("http", tables, summary)


def main(argv: list[str]) -> None:
    if argv[:1] == ["--bare-server"]:
        bare_server_main(int(argv[1]), int(argv[2]))
    elif argv[:1] == ["--floor-server"]:
        floor_server_main(int(argv[1]), int(argv[2]))
    elif argv[:1] == ["--load"]:
        aiohttp_load_main(argv[1], float(argv[2]), int(argv[3]))
    else:
        from tests.perf.common import print_result

        print_result(run("--quick" in argv))


if __name__ == "__main__":
    main(sys.argv[1:])
