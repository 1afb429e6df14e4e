"""The compiled modules, built by ``pip install .`` when a C compiler is there.

``geecache._hitpath`` (geecache/csrc) answers the data plane's common cache hit in C
(``workers/dataplane/hitpath.py``); ``geecache._arenawrite`` makes the arena's common set and
delete (``geecache/shm/arena.py``).  Both are optional: a failed build warns and installs the
pure-Python package, which gives the same answers (everything else is in pyproject.toml).
"""

from setuptools import Extension, setup


def compiled(name: str, source: str) -> Extension:
    """One optional C module of geecache/csrc (a failed build leaves the Python path)."""
    return Extension(name, sources=[f"geecache/csrc/{source}"], depends=["geecache/csrc/xxh3.h"],
                     extra_compile_args=["-O2", "-std=gnu11", "-fno-strict-aliasing"], optional=True)


setup(ext_modules=[compiled("geecache._hitpath", "hitpath.c"),
                   compiled("geecache._arenawrite", "arenawrite.c")])
