"""Shared helpers for the benchmark modules under ``tests/perf``.

Each ``bench_<name>.py`` exposes ``run(quick: bool) -> dict`` and builds its
result from these helpers, so every benchmark times, reports and plots the
same way and ``main.py`` can print, log and save any of them.

Import as ``from tests.perf.common import progress, median_us, table``
(``main.py`` puts the repo root on ``sys.path``).
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import time
from typing import Callable, Iterable, Sequence

#: Where JSON results and plots go (not committed).
OUT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "out")

# Set once at import; main.py resets it per run so progress shows the run's clock.
_started = time.monotonic()


def reset_clock() -> None:
    """Restart the clock ``progress`` reports against (main.py calls it per bench)."""
    global _started
    _started = time.monotonic()


def progress(msg: str) -> None:
    """Print one progress line with the elapsed time, so a long run shows it is alive."""
    print(f"  [{time.monotonic() - _started:6.1f}s] {msg}", file=sys.stderr, flush=True)


def auto_n(fn: Callable[[], object], target_s: float = 0.05, limit: int = 1_000_000) -> int:
    """How many calls of *fn* take about *target_s*: sized so timer overhead is negligible."""
    n = 1
    while n < limit:
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        elapsed = time.perf_counter() - t0
        if elapsed >= target_s / 4:
            return max(1, min(limit, int(n * target_s / elapsed)))
        n *= 4
    return limit


def median_us(fn: Callable[[], object], n: int, repeats: int = 5) -> float:
    """Median over *repeats* runs of the mean microseconds per call of *fn* (n calls a run).

    The median of several runs, not the mean, because one run hit by a
    scheduler hiccup on a 2-core box should not move the figure.
    """
    if n < 1 or repeats < 1:
        raise ValueError(f"n and repeats must be >= 1, got n={n} repeats={repeats}")
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        runs.append((time.perf_counter() - t0) * 1e6 / n)
    return statistics.median(runs)


def table(title: str, columns: Sequence[str], rows: Iterable[Sequence[object]]) -> dict:
    """A result table in the shape main.py prints, logs and saves."""
    rows = [list(r) for r in rows]
    for r in rows:
        if len(r) != len(columns):
            raise ValueError(f"table {title!r}: row {r!r} has {len(r)} cells, expected {len(columns)}")
    return {"title": title, "columns": list(columns), "rows": rows}


def result(name: str, tables: list[dict], summary: dict[str, float], plots: Sequence[str] = ()) -> dict:
    """The dict a bench module's ``run`` returns."""
    return {"name": name, "tables": tables, "summary": dict(summary), "plots": list(plots)}


def format_cell(value: object) -> str:
    """One table cell as text: floats with precision that suits their size."""
    if isinstance(value, float):
        if value == 0:
            return "0"
        mag = abs(value)
        if mag >= 100:
            return f"{value:,.0f}"
        if mag >= 10:
            return f"{value:.1f}"
        if mag >= 0.01:
            return f"{value:.2f}"
        return f"{value:.2e}"
    return str(value)


def format_table(t: dict) -> str:
    """*t* as aligned text: strings left, numbers right."""
    columns = t["columns"]
    cells = [[format_cell(v) for v in row] for row in t["rows"]]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    numeric = [
        all(isinstance(row[i], (int, float)) for row in t["rows"]) and bool(t["rows"])
        for i in range(len(columns))
    ]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)).rstrip()

    out = [t["title"], line(columns), line(["-" * w for w in widths])]
    out += [line(r) for r in cells]
    return "\n".join(out)


def plot_lines(
    filename: str,
    title: str,
    xlabel: str,
    ylabel: str,
    series: dict[str, tuple[Sequence[float], Sequence[float]]],
    logx: bool = False,
    logy: bool = False,
) -> str | None:
    """Write a line chart PNG to OUT_DIR/filename; return its path, or None without matplotlib.

    *series* maps a legend label to (xs, ys).  matplotlib is in the ``perf``
    extra only, so a missing one skips the plot instead of failing the bench.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display on CI boxes
        import matplotlib.pyplot as plt
    except ImportError:
        progress(f"matplotlib not importable; skipping plot {filename}")
        return None
    os.makedirs(OUT_DIR, exist_ok=True)
    path = os.path.join(OUT_DIR, filename)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    try:
        for label, (xs, ys) in series.items():
            ax.plot(list(xs), list(ys), marker="o", label=label)
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if logx:
            ax.set_xscale("log")
        if logy:
            ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)
    return path


def load_generator() -> str:
    """The HTTP load generator the benches use: wrk when on PATH, else our aiohttp client."""
    return "wrk" if shutil.which("wrk") else "aiohttp client (install wrk for real figures)"


def print_result(out: dict) -> None:
    """Print a bench result's tables and summary (a bench module run on its own)."""
    for t in out["tables"]:
        print(format_table(t), end="\n\n")
    print("summary:", out.get("summary", {}))
