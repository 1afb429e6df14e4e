"""The `etcd` and `procs` markers, enforced so that none can be forgotten.

`python -m pytest -m "not etcd and not procs"` is the fast inner loop; it is
only honest if every test that starts a process carries the mark.  So the
marks are checked where processes start, not by review:

- an audit hook (``sys.addaudithook``) sees every fork and every spawn of the
  test process (``os.fork``, ``subprocess.Popen``, ``os.posix_spawn``...) and
  raises `UnmarkedSpawnError` unless the running test is marked ``procs``;
- `EtcdServer.start` (and ``etcdctl``) run inside ``spawning("etcd")``, which
  requires the ``etcd`` mark instead (tests using the etcd fixtures get it
  automatically, see tests/conftest.py).

conftest.py installs the hook once and tells this module which test runs
(setup, call and teardown, so module-scoped fixtures count for the test that
first or last needs them).  Outside a test (collection, pytest's own work)
nothing is checked.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Iterator

#: Audit events that start a process from the test process.
SPAWN_EVENTS = frozenset({
    "os.fork", "os.forkpty", "os.posix_spawn", "os.spawn", "os.system", "subprocess.Popen",
})

#: (test id, its marker names) while a test runs; None outside tests.
_running: tuple[str, frozenset[str]] | None = None
#: The mark a `spawning` block stands for (it permits spawns the mark covers).
_allowed: str | None = None
_installed = False


class UnmarkedSpawnError(RuntimeError):
    """A test started a process (or an etcd) without the marker that says so."""


def install() -> None:
    """Install the audit hook (once per interpreter: audit hooks cannot be removed)."""
    global _installed
    if not _installed:
        sys.addaudithook(_audit)
        _installed = True


def set_running(nodeid: str | None, names=()) -> None:
    """Record the test now running (None: no test), with its marker names."""
    global _running
    _running = None if nodeid is None else (nodeid, frozenset(names))


def require(mark: str, what: str) -> None:
    """Raise UnmarkedSpawnError when a test runs and is not marked *mark*."""
    if _running is not None and mark not in _running[1]:
        nodeid = _running[0]
        raise UnmarkedSpawnError(
            f"{nodeid} {what} but is not marked {mark!r}: add @pytest.mark.{mark} "
            f"(or pytestmark = pytest.mark.{mark} in its module) so that "
            '-m "not etcd and not procs" leaves it out')


@contextlib.contextmanager
def spawning(mark: str, what: str) -> Iterator[None]:
    """Spawns inside this block need *mark* on the running test instead of ``procs``."""
    global _allowed
    require(mark, what)
    outer, _allowed = _allowed, mark
    try:
        yield
    finally:
        _allowed = outer


def _audit(event: str, args) -> None:
    if event in SPAWN_EVENTS and _running is not None and _allowed is None:
        require("procs", f"started a process ({event})")
