"""A loader whose import makes the Nth process the importer forks afterwards fail to boot.

Named in a config that a SIGHUP rolls onto: the supervisor imports it while it
checks the new config, so from then on it counts its own forks (the new
workers, in slot order) and the ``$GEECACHE_TEST_BOOT_FAIL_AT``-th child exits
with the worker's boot-error status before it can serve.  The failure is set
by configuration and counted in the forking process: no race with the roll.
"""

from __future__ import annotations

import os

#: Which fork after the import fails (1: the first); 0 or unset: none.
FAIL_AT = int(os.environ.get("GEECACHE_TEST_BOOT_FAIL_AT", "0"))
#: Exit status of the failing child: the worker's WORKER_BOOT_ERROR.
BOOT_ERROR = 3

_forks = 0


def _count_fork() -> None:
    global _forks
    _forks += 1


def _fail_if_chosen() -> None:
    if _forks == FAIL_AT:
        os._exit(BOOT_ERROR)


os.register_at_fork(before=_count_fork, after_in_child=_fail_if_chosen)


def load(key: str) -> bytes:
    """``new-<key>``: tells a worker forked with this config from one forked with the old."""
    return f"new-{key}".encode()
