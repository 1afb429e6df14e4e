"""systemd's notify protocol (``Type=notify``), spoken by the supervisor without a library.

systemd passes ``$NOTIFY_SOCKET`` (a path, or ``@name`` for an abstract
socket) and, with ``WatchdogSec=``, ``$WATCHDOG_USEC`` (and
``$WATCHDOG_PID``).  Each message is one datagram of ``KEY=VALUE`` lines
(sd_notify(3)):

- ``READY=1`` once every configured worker has stamped its first heartbeat
  (they serve), so ``systemctl start`` returns when the host answers;
- ``WATCHDOG=1`` every half of ``WatchdogSec`` from the arbiter's loop, which
  turns at least once a second; a supervisor stuck for ``WatchdogSec`` is
  restarted by systemd (the workers are watched by the supervisor itself);
- ``STOPPING=1`` when a stop begins; ``STATUS=`` lines for ``systemctl status``.

Each message opens its own socket and closes it: no descriptor is held that
a forked child would inherit.  The variables are removed from the
environment at start, as ``sd_notify(unset_environment=1)`` does, so no child
or loader talks to systemd in the supervisor's name.  Sending never raises:
a host without systemd, or a socket gone, only loses the message (logged once).
"""

from __future__ import annotations

import logging
import os
import socket
import time

log = logging.getLogger("geecache.supervisor")


class Notifier:
    """The supervisor's channel to systemd; every method is a no-op without ``$NOTIFY_SOCKET``.

    Used by the arbiter's loop only (one thread: no lock guards ``_ready`` or the beat's due time).
    """

    def __init__(self, address: str | None, watchdog_usec: int = 0) -> None:
        if address and address.startswith("@"):
            address = "\0" + address[1:]  # an abstract socket
        self.address = address or None
        #: Seconds between WATCHDOG=1 messages (0: no watchdog asked for).
        self.watchdog_interval = watchdog_usec / 2e6 if self.address else 0.0
        self._next_beat = 0.0
        self._ready = False
        self._failed = False

    @classmethod
    def from_environ(cls, environ=None) -> "Notifier":
        """The notifier systemd's variables describe, taken out of *environ* (``os.environ``)."""
        environ = os.environ if environ is None else environ
        address = environ.pop("NOTIFY_SOCKET", None)
        usec = environ.pop("WATCHDOG_USEC", "")
        pid = environ.pop("WATCHDOG_PID", "")
        try:
            watchdog = int(usec) if usec and (not pid or int(pid) == os.getpid()) else 0
        except ValueError:
            watchdog = 0
        return cls(address, max(watchdog, 0))

    def send(self, *lines: str) -> bool:
        """Send one message of *lines*; False when there is no socket or it failed."""
        if self.address is None:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto("\n".join(lines).encode(), self.address)
            return True
        except OSError as exc:
            if not self._failed:
                self._failed = True
                log.warning("systemd notify socket %r: %s (further failures are not logged)",
                            self.address.replace("\0", "@"), exc.strerror or exc)
            return False

    def ready(self, status: str) -> None:
        """``READY=1`` (once per process) with *status*."""
        if not self._ready:
            self._ready = True
            self.send("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def status(self, status: str) -> None:
        """A ``STATUS=`` line for ``systemctl status``."""
        self.send(f"STATUS={status}")

    def stopping(self) -> None:
        """``STOPPING=1``: the stop began."""
        self.send("STOPPING=1", "STATUS=stopping")

    def beat(self, now: float | None = None) -> None:
        """``WATCHDOG=1`` when half the watchdog interval has passed since the last one."""
        if not self.watchdog_interval:
            return
        now = time.monotonic() if now is None else now
        if now >= self._next_beat:
            self._next_beat = now + self.watchdog_interval
            self.send("WATCHDOG=1")

    @property
    def next_beat_in(self) -> float:
        """Seconds until the next WATCHDOG=1 is due (inf without a watchdog)."""
        if not self.watchdog_interval:
            return float("inf")
        return max(0.0, self._next_beat - time.monotonic())
