"""The host's log: one handler on stderr, as gunicorn writes it, set up once in the supervisor.

Every child is forked after ``configure`` and inherits it.  Two formats:

- ``text``: ``2026-12-03T12:34:08.123+00:00 [4242] INFO geecache.supervisor: message``
  (ISO-8601 with the time zone's offset, so lines from hosts in different
  zones sort and compare);
- ``json``: one object a line with ``time``, ``level``, ``pid``, ``process``
  (the process's role: supervisor, worker, registrar), ``logger`` and
  ``message``, plus ``exc_info`` when a traceback goes with it, and the
  fields of an access line.

The access log (logger ``geecache.access``) is off by default; when on, the
data plane answers through ``workers.dataplane.access`` instead of its plain
protocol, so an access log that is off costs the hit path nothing.
"""

from __future__ import annotations

import json
import logging
import sys
import time

#: The formats ``--log-format`` takes.
LOG_FORMATS = ("text", "json")
#: The access log's logger: one line per answered request (or per sampled one).
ACCESS_LOGGER = "geecache.access"

#: What this process is, for the ``process`` field: the supervisor until a fork says otherwise.
#: Written once per process right after its fork (before any thread), read by every record.
_role = "supervisor"


def set_role(role: str) -> None:
    """Name this process's role (``worker``, ``registrar``) in its log records; call after fork."""
    global _role
    _role = role


def iso_time(created: float) -> str:
    """``2026-12-03T12:34:08.123+00:00``: local time with its offset, to the millisecond."""
    local = time.localtime(created)
    offset = local.tm_gmtoff
    sign = "+" if offset >= 0 else "-"
    hours, minutes = divmod(abs(offset) // 60, 60)
    return (time.strftime("%Y-%m-%dT%H:%M:%S", local) + f".{int(created % 1 * 1000):03d}"
            + f"{sign}{hours:02d}:{minutes:02d}")


class TextFormatter(logging.Formatter):
    """``<ISO time> [<pid>] <LEVEL> <logger>: <message>``, a traceback on the following lines."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return iso_time(record.created)


class JSONFormatter(logging.Formatter):
    """One JSON object per record, on one line (a traceback is a field, not more lines)."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "time": iso_time(record.created),
            "level": record.levelname.lower(),
            "pid": record.process,
            "process": _role,
            "logger": record.name,
            "message": record.getMessage(),
        }
        access = getattr(record, "access", None)
        if access is not None:
            out.update(access)
        if record.exc_info:
            out["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc_info"] = record.exc_text
        return json.dumps(out, ensure_ascii=False, default=str)


def configure(level: str, fmt: str = "text", stream=None) -> None:
    """Send every logger's records at *level* and above to *stream* (stderr) in *fmt*."""
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    handler.setFormatter(JSONFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())

