"""Throughput against worker count, GeeCache cache hits beside bare aiohttp.

    python tests/perf/bench_scaling.py [--quick]

For 1..cores workers, req/s of cache hits (the real supervisor) and of a bare
aiohttp app on a shared socket (``bench_http``'s servers and load generator,
wrk when on PATH).  Fits Amdahl's law, S(n) = 1 / (s + (1 - s) / n), to each
curve's speedup for the serial fraction s, and says what that predicts for
16 cores.  The load generator runs on the same cores, so on a small box it
takes a share that grows with the worker count: s absorbs it, and the
prediction is a floor rather than a forecast.  Writes a PNG plot to
``tests/perf/out/`` when matplotlib is importable.
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile

PERF_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(PERF_DIR))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from tests.perf.bench_http import measure, start_bare, start_geecache  # noqa: E402
from tests.perf.common import load_generator, plot_lines, progress, result, table  # noqa: E402

PREDICT_CORES = 16


def amdahl_fit(workers: list[int], rps: list[float]) -> float:
    """The serial fraction s in [0, 1] that best fits rps[i]/rps[0] = S(workers[i]) (least squares)."""
    if len(workers) < 2:
        return 0.0
    base = rps[0]  # workers[0] is 1: the single-worker throughput
    best, best_err = 0.0, float("inf")
    for k in range(1001):
        s = k / 1000
        err = sum((r / base - 1 / (s + (1 - s) / n)) ** 2 for n, r in zip(workers, rps))
        if err < best_err:
            best, best_err = s, err
    return best


def speedup(s: float, n: int) -> float:
    """Amdahl's speedup at *n* workers for serial fraction *s*."""
    return 1 / (s + (1 - s) / n)


def run(quick: bool) -> dict:
    cores = os.cpu_count() or 1
    counts = list(range(1, max(2, cores) + 1))
    seconds, warmup = (2, 1) if quick else (6, 2)
    data_dir = tempfile.mkdtemp(prefix="geecache-scaling-")
    progress(f"load generator: {load_generator()}; workers {counts}; {seconds}s per run")
    # Interleaved rounds, medians: drift on a shared box then hits every point alike.
    rounds = 1 if quick else 3
    runs: dict[tuple[str, int], list[float]] = {}
    try:
        for r in range(rounds):
            for n in counts:
                progress(f"round {r + 1}/{rounds}: {n} worker(s)")
                runs.setdefault(("geecache hits", n), []).append(
                    measure(lambda: start_geecache(n, data_dir), seconds, warmup)["rps"])
                runs.setdefault(("bare aiohttp", n), []).append(measure(lambda: start_bare(n), seconds, warmup)["rps"])
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    curves = {name: [statistics.median(runs[(name, n)]) for n in counts] for name in ("geecache hits", "bare aiohttp")}
    fits = {name: amdahl_fit(counts, ys) for name, ys in curves.items()}
    rows = [[n, curves["geecache hits"][i], curves["bare aiohttp"][i],
             curves["geecache hits"][i] / curves["bare aiohttp"][i]] for i, n in enumerate(counts)]
    g, b = fits["geecache hits"], fits["bare aiohttp"]
    g16 = curves["geecache hits"][0] * speedup(g, PREDICT_CORES)
    prediction = (f"Amdahl fit: serial fraction {g:.3f} for GeeCache hits ({b:.3f} for bare aiohttp); "
                  f"at {PREDICT_CORES} cores that predicts a {speedup(g, PREDICT_CORES):.1f}x speedup, "
                  f"~{g16:,.0f} req/s of hits (bare aiohttp: {speedup(b, PREDICT_CORES):.1f}x). Indicative only: "
                  f"{len(counts)} points on {cores} cores shared with the load generator.")
    if any(not 1.0 < ys[-1] / ys[0] < counts[-1] for ys in curves.values()):
        prediction += (" A curve here is flat or superlinear, which Amdahl's law cannot fit: the run was"
                       " too noisy to mean anything; run it again without --quick.")
    progress(prediction)
    plot = plot_lines("scaling.png", f"Cache-hit req/s vs workers ({load_generator()})", "workers", "req/s",
                      {name: (counts, ys) for name, ys in curves.items()})
    summary = {"serial_fraction_geecache": g, "serial_fraction_bare": b,
               f"predicted_speedup_{PREDICT_CORES}_geecache": speedup(g, PREDICT_CORES),
               f"predicted_speedup_{PREDICT_CORES}_bare": speedup(b, PREDICT_CORES),
               f"predicted_rps_{PREDICT_CORES}_geecache": g16}
    tables = [
        table("req/s by worker count", ["workers", "geecache hits", "bare aiohttp", "geecache/bare"], rows),
        table("Amdahl fit", ["server", "serial fraction", f"speedup @{PREDICT_CORES}"],
              [[name, s, speedup(s, PREDICT_CORES)] for name, s in fits.items()]),
        table("Prediction", ["text"], [[prediction]]),
    ]
    return result("scaling", tables, summary, [plot] if plot else [])


if __name__ == "__main__":
    from tests.perf.common import print_result

    print_result(run("--quick" in sys.argv))
