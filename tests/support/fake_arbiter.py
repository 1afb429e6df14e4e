"""An Arbiter whose only child kind is a fake: ``python -m tests.support.fake_arbiter SLOTS BEHAVIOUR...``.

The real loop (``geecache.host.arbiter.Arbiter``: wait, reap, watch, signals, manage) over a
child kind whose body does only what the test asks, so the loop's policies are tested apart
from the workers.  The kind keeps SLOTS children; each spawn takes the next BEHAVIOUR, and the
last one repeats:

- ``beat``: heartbeat from a loop until SIGTERM, then exit 0;
- ``silent``: never beat (the watchdog must replace it);
- ``exit:N``: beat once, then exit with status N;
- ``halt``: beat once and exit 7; the kind then halts the host.

Every event is one JSON line on stdout: ``spawned``, ``ready``, ``exited`` (with the status),
and the arbiter's exit code.  The test reads them with ``read_events``.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

from geecache.config import parse_args
from geecache.host.arbiter import Arbiter, bind
from geecache.host.children import ChildKind
from geecache.shm import Arena
from geecache.signals import STOP_SIGNALS


def emit(**event) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


class FakeKind(ChildKind):
    """Keeps len(plan) children, each running its behaviour; respawns whatever exits."""

    name = "fake"

    def __init__(self, slots: int, plan: list[str]) -> None:
        self.plan = list(plan)
        self.target = slots
        self.next = 0
        self.slots: dict[int, str] = {}

    def _behaviour(self) -> str:
        b = self.plan[min(self.next, len(self.plan) - 1)]
        self.next += 1
        return b

    def manage(self, arb) -> None:
        busy = {c.slot for c in arb.children_of(self)}
        for slot in range(self.target):
            if slot not in busy:
                self.slots[slot] = self._behaviour()
                arb.spawn(self, slot)
                emit(event="spawned", slot=slot, behaviour=self.slots[slot],
                     pid=next(c.pid for c in arb.children_of(self) if c.slot == slot))

    def became_ready(self, arb, child) -> None:
        emit(event="ready", slot=child.slot, pid=child.pid)

    def exited(self, arb, child, status: int) -> None:
        code = os.waitstatus_to_exitcode(status)
        emit(event="exited", slot=child.slot, pid=child.pid, code=code)
        if code == 7 and not arb.stopping:
            arb.halt(f"fake {child.slot} asked to halt the host")

    def body(self, arb, slot, sock) -> None:
        behaviour = self.slots[slot]
        pulse = arb.child_pulse
        stop = []
        signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
        # The arbiter's spawn leaves the stop signals blocked until the body can handle them.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        if behaviour == "silent":
            while not stop:
                time.sleep(0.05)
            os._exit(0)
        pulse.beat()
        if behaviour.startswith("exit:"):
            os._exit(int(behaviour[5:]))
        if behaviour == "halt":
            os._exit(7)
        while not stop:  # "beat"
            pulse.beat()
            time.sleep(0.05)
        os._exit(0)


def main(slots: int, plan: list[str]) -> int:
    cfg = parse_args(["--port", "0", "--workers", "1", "--worker-timeout", "2", "--arena", "8MiB"], {})
    arena = Arena.create(cfg.arena, item_limit=cfg.item_limit, max_groups=4, shards=1,
                         max_procs=cfg.process_rows)
    try:
        arb = Arbiter(cfg, arena, bind(cfg, False), bind(cfg, False, admin=True))
        arb.workers = FakeKind(slots, plan)
        arb.kinds = [arb.workers]
        emit(event="arbiter", pid=os.getpid())
        code = arb.run()
        emit(event="stopped", code=code)
        return code
    finally:
        arena.close()
        arena.unlink()


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]), sys.argv[2:]))
