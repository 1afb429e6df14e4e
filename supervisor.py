#!/usr/bin/env python3
"""GeeCache host supervisor: one arena, one port, N forked workers.

    python supervisor.py [--config FILE] [--workers N] [--host 127.0.0.1] [--port 8001]
                         [--arena 256MiB] [--data-dir DIR] [--auth-token T] [--etcd URL,...] ...

The same program as the ``geecache`` command an install provides and as
``python -m geecache``; this file runs it from a checkout without installing.

With no config it serves the demo group ``scores`` from ``<data dir>/demo.db``
(created and seeded on first run), so ``curl 'http://127.0.0.1:8001/api?key=Tom'``
prints ``630``.  ``--help`` lists every setting (each also ``GEECACHE_<NAME>``
in the environment and ``<name>`` in the TOML file).

The supervisor itself lives in ``geecache.host``: ``main`` sets the host up,
``arbiter`` is the loop (signals, reaping), ``children`` the kinds of child
it forks.

Exit status: 0 clean stop, 1 runtime failure (e.g. the port is taken),
2 invalid configuration (before anything forks), 3 workers failed to boot.
"""

import os
import sys

# The repo root on sys.path when run as a script from elsewhere.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from geecache.host.main import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
