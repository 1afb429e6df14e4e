"""The package version: the one place it is written.

pyproject.toml reads it from here statically, so the installed metadata, ``geecache --version``
and ``geecache.__version__`` always agree.  A leaf module: ``config`` imports it without
importing the package's entry points (``client`` imports ``config``).
"""

__version__ = "0.1.0"
