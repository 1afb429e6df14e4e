#!/usr/bin/env bash
# The compiled hit path's tests under valgrind's memcheck: every read and write the C code
# makes (the parser, the arena probe over garbage, the scratch buffer) is checked; any
# C error makes the run fail.  A tenth of the random cases (GEECACHE_FUZZ_SCALE); minutes.
#
#   scripts/hitpath_memcheck.sh [.venv/bin/python]
#
# PYTHONMALLOC=malloc: CPython's own allocator confuses memcheck.  Only errors with a frame in
# _hitpath count (--error-exitcode with a suppression-free run would also flag CPython's
# known benign reads); the log is kept in $LOG.
set -euo pipefail
PY=${1:-.venv/bin/python}
LOG=${LOG:-/tmp/hitpath-memcheck.log}
cd "$(dirname "$0")/.."
GEECACHE_FUZZ_SCALE=${GEECACHE_FUZZ_SCALE:-0.1} PYTHONMALLOC=malloc valgrind --tool=memcheck --log-file="$LOG" --track-origins=no \
    --leak-check=no --error-limit=no --num-callers=30 \
    "$PY" -m pytest -q -p no:cacheprovider tests/test_hitpath.py \
    -k "not compiled_and_the_python and not writer_killed" -o addopts="" --timeout=3000
ours=$(grep -c "_hitpath" "$LOG" || true)
echo "valgrind: $(grep -E 'ERROR SUMMARY' "$LOG" | tail -1)"
echo "valgrind: error frames in _hitpath: $ours (log: $LOG)"
[ "$ours" -eq 0 ]
