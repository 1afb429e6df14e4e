"""``python -m geecache``: run one host, as ``supervisor.py`` does."""

import sys

from geecache.host.main import main

if __name__ == "__main__":
    sys.exit(main())
