#!/usr/bin/env python3
"""Rewrite the settings tables of docs/operations.md from geecache.config's tables.

    python scripts/settings_reference.py          # rewrite in place
    python scripts/settings_reference.py --check  # exit 1 when the doc is stale

Each table sits between ``<!-- settings:host -->`` / ``<!-- settings:groups -->``
and ``<!-- /settings -->``; everything else in the doc is left as written.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from geecache.config import GROUP_SETTINGS, HOST_SETTINGS, reference_table  # noqa: E402

DOC = ROOT / "docs" / "operations.md"
TABLES = {"host": HOST_SETTINGS, "groups": GROUP_SETTINGS}


def render(text: str) -> str:
    """*text* with every marked table regenerated."""
    def one(m: re.Match) -> str:
        return f"{m.group(1)}\n{reference_table(TABLES[m.group(2)])}{m.group(3)}"

    return re.sub(r"(<!-- settings:(\w+) -->)\n.*?(<!-- /settings -->)", one, text, flags=re.S)


def main(argv: list[str]) -> int:
    """Rewrite the doc, or with ``--check`` only say whether it is current."""
    old = DOC.read_text()
    new = render(old)
    if "--check" in argv:
        if new != old:
            print(f"{DOC} is stale: run python scripts/settings_reference.py", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
