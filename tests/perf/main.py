"""Run GeeCache benchmarks and record their results.

    python tests/perf/main.py [compression|arena|packed|policy|scale|http|scaling|cluster|remote|batch|write|miss|all] [--quick] [--json FILE]

Each benchmark lives in ``tests/perf/bench_<name>.py`` and exposes
``run(quick: bool) -> dict`` (see ``common.result``).  This driver prints the
tables, appends them with the commit and machine to
``tests/perf/performance_test.log`` (the history to compare against), and
saves JSON (default ``tests/perf/out/<name>-<timestamp>.json``).  A bench that
is missing or raises is reported and the run goes on; the exit code says
whether any failed.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import platform
import subprocess
import sys
import time
import traceback

PERF_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(PERF_DIR))
# The repo root first, so `import geecache` is this checkout even when another copy is installed.
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from tests.perf import common  # noqa: E402

#: Every bench, in the order ``all`` runs them (cheap and local first).
BENCHES = ("compression", "arena", "packed", "policy", "scale", "http", "scaling", "cluster", "remote", "batch",
           "write", "miss")
LOG_PATH = os.path.join(PERF_DIR, "performance_test.log")
#: Longer summaries are not printed or logged as text, only saved in the JSON.
SUMMARY_LINES = 20



def shown_path(path: str) -> str:
    """*path* as the tool prints it: relative to the repository (``tests/perf/out/...``) for
    both the plot and the JSON lines, wherever the tool was started from."""
    return os.path.relpath(path, REPO_ROOT) if os.path.isabs(path) else path

def git_commit() -> str:
    """Short commit of the checkout, with ``-dirty`` when tracked files changed."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT, capture_output=True, text=True, timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (sha or "unknown") + ("-dirty" if dirty else "")


def machine() -> dict:
    """What the figures were measured on; ratios only compare within one machine."""
    return {
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(terse=True),
        "machine": platform.machine(),
    }


class BenchMissing(RuntimeError):
    """No ``bench_<name>.py`` module (yet): reported in one line, no traceback."""


def run_bench(name: str, quick: bool) -> dict:
    """Import ``bench_<name>`` and run it; raise on a missing module or a bad result."""
    try:
        module = importlib.import_module(f"tests.perf.bench_{name}")
    except ModuleNotFoundError as exc:
        if exc.name == f"tests.perf.bench_{name}":
            raise BenchMissing(f"no benchmark module tests/perf/bench_{name}.py") from None
        raise
    out = module.run(quick)
    if not isinstance(out, dict) or not isinstance(out.get("tables"), list):
        raise RuntimeError(f"bench_{name}.run returned {type(out).__name__}, not a result dict with tables")
    out.setdefault("name", name)
    out.setdefault("summary", {})
    out.setdefault("plots", [])
    return out


def render(record: dict) -> str:
    """The human text of one record: header, tables, summary, plots."""
    lines = [
        f"==== {record['name']}  {record['timestamp']}  commit {record['commit']}"
        f"  quick={record['quick']}  {record['elapsed_s']:.1f}s",
        "machine: " + ", ".join(f"{k}={v}" for k, v in record["machine"].items()),
    ]
    for t in record["tables"]:
        lines += ["", common.format_table(t)]
    summary = record["summary"]
    if len(summary) > SUMMARY_LINES:  # a summary that repeats the tables cell by cell stays in the JSON
        lines += ["", f"summary: {len(summary)} figures (in the JSON)"]
    elif summary:
        lines += ["", "summary:"] + [f"  {k} = {common.format_cell(v)}" for k, v in summary.items()]
    for p in record["plots"]:
        lines.append(f"plot: {shown_path(p)}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """CLI entry; returns the process exit code (1 when any bench failed)."""
    parser = argparse.ArgumentParser(description="Run GeeCache benchmarks.")
    parser.add_argument("bench", nargs="?", default="all", choices=BENCHES + ("all",))
    parser.add_argument("--quick", action="store_true", help="short runs (all --quick < 3 min on 2 cores)")
    parser.add_argument("--json", metavar="FILE", help="write results here (default tests/perf/out/<name>-<ts>.json)")
    args = parser.parse_args(argv)

    names = BENCHES if args.bench == "all" else (args.bench,)
    stamp = common.RUN_STAMP  # the plots of this run carry it too
    commit, mach = git_commit(), machine()
    records, failed = [], []
    for name in names:
        print(f"--- {name}{' (quick)' if args.quick else ''}", file=sys.stderr, flush=True)
        common.reset_clock()
        t0 = time.monotonic()
        try:
            out = run_bench(name, args.quick)
        except Exception as exc:  # one broken bench must not hide the others' figures
            failed.append(name)
            print(f"ERROR {name}: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            if not isinstance(exc, BenchMissing):
                traceback.print_exc(limit=4, file=sys.stderr)
            continue
        record = {
            "name": out["name"],
            "timestamp": datetime.datetime.now().isoformat(timespec="seconds"),
            "commit": commit,
            "machine": mach,
            "quick": args.quick,
            "elapsed_s": round(time.monotonic() - t0, 2),
            "tables": out["tables"],
            "summary": out["summary"],
            "plots": out["plots"],
        }
        text = render(record)
        print(text + "\n", flush=True)
        with open(LOG_PATH, "a", encoding="utf-8") as log:
            log.write(text + "\n\n")
        records.append(record)
        if not args.json:
            os.makedirs(common.OUT_DIR, exist_ok=True)
            path = os.path.join(common.OUT_DIR, f"{name}-{stamp}.json")
            with open(path, "w", encoding="utf-8") as f:
                json.dump(record, f, indent=1)
            print(f"json: {shown_path(path)}", file=sys.stderr)

    if args.json:
        payload = records[0] if len(names) == 1 and records else {"results": records, "failed": failed}
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(payload, f, indent=1)
        print(f"json: {args.json}", file=sys.stderr)
    if failed:
        print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
