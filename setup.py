"""The one compiled module, built by ``pip install .`` when a C compiler is there.

``geecache._hitpath`` (geecache/csrc) answers the data plane's common cache hit in C
(``workers/dataplane/hitpath.py``).  It is optional: a failed build warns and installs the
pure-Python package, which serves the same answers (everything else is in pyproject.toml).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "geecache._hitpath",
            sources=["geecache/csrc/hitpath.c"],
            depends=["geecache/csrc/xxh3.h"],
            extra_compile_args=["-O2", "-std=gnu11", "-fno-strict-aliasing"],
            optional=True,
        )
    ],
)
