#!/usr/bin/env bash
# Stop the cluster scripts/start_cluster.sh started, and remove its run directory.
#
# Only processes recorded in the run directory (and their children) are
# signalled, by pid: TERM, a bounded wait, then KILL. Shared-memory segments
# (/dev/shm/geecache-*) those processes had mapped are removed if they outlive
# them; nobody else's segments are touched.
#
# Environment: GEECACHE_RUN_DIR (as for start_cluster.sh), GEECACHE_STOP_TIMEOUT
# (seconds to wait after TERM before KILL, default 15).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/cluster_env.sh
. "$ROOT/scripts/cluster_env.sh"
STOP_TIMEOUT=${GEECACHE_STOP_TIMEOUT:-15}

if [ ! -d "$RUN_DIR" ]; then
    echo "no cluster run directory at $RUN_DIR; nothing to stop"
    exit 0
fi

# stop_pids PID...: TERM, wait up to STOP_TIMEOUT for all to go, then KILL the rest.
stop_pids() {
    [ "$#" -gt 0 ] || return 0
    local pid left deadline
    for pid in "$@"; do kill -TERM "$pid" 2>/dev/null || true; done
    deadline=$((SECONDS + STOP_TIMEOUT))
    while :; do
        left=""
        for pid in "$@"; do
            if is_ours "$pid"; then left="$left $pid"; fi
        done
        [ -n "$left" ] || return 0
        [ "$SECONDS" -lt "$deadline" ] || break
        sleep 0.1
    done
    echo "still running after ${STOP_TIMEOUT}s, sending KILL:$left" >&2
    local killed=$left
    for pid in $killed; do kill -KILL "$pid" 2>/dev/null || true; done
    deadline=$((SECONDS + 5))
    while [ "$SECONDS" -lt "$deadline" ]; do
        left=""
        for pid in $killed; do
            if is_ours "$pid"; then left="$left $pid"; fi
        done
        [ -n "$left" ] || return 0
        sleep 0.1
    done
    echo "could not stop:$left" >&2
    return 1
}

hosts=$(ours_of "$RUN_DIR"/pids/host-*.pid)
etcd=$(ours_of "$RUN_DIR"/pids/etcd.pid)

# Note children and mapped segments before signalling: once a supervisor is gone,
# an orphaned child can no longer be found through its parent.
children=""
for pid in $hosts; do
    for child in $(descendants "$pid"); do
        if is_ours "$child"; then children="$children $child"; fi
    done
done
segments=""
for pid in $hosts $children; do
    segments="$segments $(grep -o '/dev/shm/geecache-[A-Za-z0-9_.-]*' "/proc/$pid/maps" 2>/dev/null || true)"
done
# A supervisor that was SIGKILLed maps nothing any more; it recorded its arena
# in its data dir (geecache/leftovers.py), so read the name from there.
for state in "$RUN_DIR"/data/*/supervisor-*.state; do
    [ -e "$state" ] || continue
    seg=$(grep -o '"arena": "geecache-[A-Za-z0-9_.-]*"' "$state" | sed 's/.*"\(geecache-[^"]*\)"/\1/')
    if [ -n "$seg" ]; then segments="$segments /dev/shm/$seg"; fi
done
segments=$(echo $segments | tr ' ' '\n' | sort -u)

# Hosts first: a supervisor that stops cleanly revokes its etcd lease, which needs etcd up.
rc=0
# shellcheck disable=SC2086
stop_pids $hosts || rc=1
# shellcheck disable=SC2086
stop_pids $children || rc=1
# shellcheck disable=SC2086
stop_pids $etcd || rc=1

for seg in $segments; do
    if [ -e "$seg" ]; then
        echo "removing leftover shared memory $seg"
        rm -f -- "$seg"
    fi
done
if [ "$rc" -ne 0 ]; then
    echo "kept $RUN_DIR: some processes would not stop; run this script again" >&2
    exit 1
fi
rm -rf -- "$RUN_DIR"
echo "cluster stopped; removed $RUN_DIR"
