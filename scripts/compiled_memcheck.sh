#!/usr/bin/env bash
# The compiled modules' tests under valgrind's memcheck: every read and write the C code
# makes (the hit path's parser, its arena probe over garbage, its scratch buffer, its answer
# to a peer batch; the arena writer's sets and deletes) is checked; any C error makes the run
# fail.  A tenth of the random cases (GEECACHE_FUZZ_SCALE); minutes.
#
#   scripts/compiled_memcheck.sh [.venv/bin/python]
#
# PYTHONMALLOC=malloc: CPython's own allocator confuses memcheck.  Only errors with a frame in
# the compiled module count (CPython itself reports some benign ones); the log is kept in $LOG.
set -uo pipefail
PY=${1:-.venv/bin/python}
LOG=${LOG:-/tmp/compiled-memcheck.log}
cd "$(dirname "$0")/.."
GEECACHE_FUZZ_SCALE=${GEECACHE_FUZZ_SCALE:-0.1} PYTHONMALLOC=malloc valgrind --tool=memcheck --log-file="$LOG" --track-origins=no \
    --leak-check=no --error-limit=no --num-callers=30 \
    "$PY" -m pytest -q -p no:cacheprovider tests/unit/test_hitpath.py tests/unit/test_peer_hits.py tests/unit/test_arenawrite.py \
    -k "not compiled_and_the_python and not writer_killed and not through_the_compiled_writer" \
    -o addopts="" --timeout=3000
tests=$?
# A frame in our code: hitpath.c / arenawrite.c / xxh3.h lines, or a module's .so (CPython's
# own reports, e.g. on getrandom()'s bytes, are not ours).
ours=$(grep -cE "\((hitpath\.c|arenawrite\.c|xxh3\.h):[0-9]+\)|_(hitpath|arenawrite)\.cpython" "$LOG" || true)
echo "valgrind: $(grep -E 'ERROR SUMMARY' "$LOG" | tail -1)"
echo "valgrind: error frames in our C: $ours (log: $LOG)"
echo "tests: exit $tests"
[ "$ours" -eq 0 ] && [ "$tests" -eq 0 ]
