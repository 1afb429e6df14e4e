"""``python -m geecache``: run one host, as ``supervisor.py`` does."""

import os
import sys

# ``python -m`` puts the working directory first on sys.path, so a ``workers.py`` (or any
# module named like one of this program's packages) in the folder it is started from would
# shadow the installed one: "No module named 'workers.worker'".  The working directory goes
# last instead, where loader modules kept in it are still found.
if sys.path and sys.path[0] in ("", os.getcwd()):
    sys.path.append(sys.path.pop(0))

from geecache.host.main import main  # noqa: E402 (after the sys.path fix, on purpose)

if __name__ == "__main__":
    sys.exit(main())
