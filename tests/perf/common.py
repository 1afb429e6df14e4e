"""Shared helpers for the benchmark modules under ``tests/perf``.

Each ``bench_<name>.py`` exposes ``run(quick: bool) -> dict`` and builds its
result from these helpers, so every benchmark times, reports and plots the
same way and ``main.py`` can print, log and save any of them.

Import as ``from tests.perf.common import progress, median_us, table``
(``main.py`` puts the repo root on ``sys.path``).
"""

from __future__ import annotations

import datetime
import os
import shutil
import statistics
import sys
import time
from typing import Callable, Iterable, Sequence

#: Where JSON results and plots go (not committed); ``GEECACHE_PERF_OUT`` moves it (tests do).
OUT_DIR = os.environ.get("GEECACHE_PERF_OUT") or os.path.join(os.path.dirname(os.path.abspath(__file__)), "out")
#: One stamp per run (per process), in every plot's name: a run never overwrites another's plots.
RUN_STAMP = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")

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
    """One table cell as text: floats with precision that suits their size; None (not measured) as –."""
    if value is None:
        return "–"
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
    # A column of numbers (and not-measured cells) is right-aligned.
    numeric = [
        all(isinstance(row[i], (int, float)) or row[i] is None for row in t["rows"])
        and any(isinstance(row[i], (int, float)) for row in t["rows"])
        for i in range(len(columns))
    ]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)).rstrip()

    out = [t["title"], line(columns), line(["-" * w for w in widths])]
    out += [line(r) for r in cells]
    return "\n".join(out)


def plot_path(filename: str) -> str:
    """Where plot *filename* of this run goes: ``OUT_DIR/<stem>-<RUN_STAMP><ext>``."""
    stem, ext = os.path.splitext(filename)
    os.makedirs(OUT_DIR, exist_ok=True)
    return os.path.join(OUT_DIR, f"{stem}-{RUN_STAMP}{ext or '.png'}")


def _pyplot():
    """matplotlib's pyplot on the Agg backend, or None (matplotlib is in the ``perf`` extra only)."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display on CI boxes
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def _axes_style(ax, logy: bool) -> None:
    """Grid; a linear y axis starts at 0, so bar and line heights compare by eye."""
    if logy:
        ax.set_yscale("log")
    else:
        ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)


def line_figure(
    title: str,
    xlabel: str,
    ylabel: str,
    series: dict[str, tuple[Sequence[float], Sequence[float]]],
    logx: bool = False,
    logy: bool = False,
):
    """The line chart ``plot_lines`` saves, as a matplotlib Figure (the caller closes it).

    When every x is an integer (worker counts, connections) the x ticks are
    integers; a linear y axis starts at 0.  Raises ImportError without matplotlib.
    """
    plt = _pyplot()
    if plt is None:
        raise ImportError("matplotlib")
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, (xs, ys) in series.items():
        ax.plot(list(xs), list(ys), marker="o", label=label)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if logx:
        ax.set_xscale("log")
    elif all(float(x).is_integer() for xs, _ in series.values() for x in xs):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    _axes_style(ax, logy)
    ax.legend()
    fig.tight_layout()
    return fig


def plot_lines(
    filename: str,
    title: str,
    xlabel: str,
    ylabel: str,
    series: dict[str, tuple[Sequence[float], Sequence[float]]],
    logx: bool = False,
    logy: bool = False,
) -> str | None:
    """Write a line chart PNG (see ``plot_path`` and ``line_figure``); its path, or None.

    *series* maps a legend label to (xs, ys).  matplotlib is in the ``perf``
    extra only, so a missing one skips the plot instead of failing the bench.
    """
    plt = _pyplot()
    if plt is None:
        progress(f"matplotlib not importable; skipping plot {filename}")
        return None
    path = plot_path(filename)
    fig = line_figure(title, xlabel, ylabel, series, logx, logy)
    try:
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)
    return path


def plot_bars(filename: str, title: str, panels: Sequence[dict]) -> str | None:
    """Grouped bar charts side by side in one PNG (see ``plot_path``); its path, or None.

    Each panel is a dict: ``title``, ``ylabel``, ``categories`` (the x groups),
    ``series`` (legend label -> one value per category; None = not measured,
    no bar) and optionally ``logy`` (else the y axis starts at 0).
    """
    plt = _pyplot()
    if plt is None:
        progress(f"matplotlib not importable; skipping plot {filename}")
        return None
    path = plot_path(filename)
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.5), squeeze=False)
    try:
        for ax, panel in zip(axes[0], panels):
            categories, series = list(panel["categories"]), panel["series"]
            width = 0.8 / max(1, len(series))
            for i, (label, values) in enumerate(series.items()):
                xs = [c + (i - (len(series) - 1) / 2) * width for c in range(len(categories))]
                pairs = [(x, v) for x, v in zip(xs, values) if v is not None]
                ax.bar([x for x, _ in pairs], [v for _, v in pairs], width, label=label)
            ax.set_xticks(range(len(categories)), categories, rotation=30 if len(categories) > 4 else 0,
                          ha="right" if len(categories) > 4 else "center")
            ax.set_title(panel["title"], fontsize=10)
            ax.set_ylabel(panel["ylabel"])
            _axes_style(ax, panel.get("logy", False))
            if len(series) > 1:
                ax.legend(fontsize=8)
        fig.suptitle(title)
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
