"""The shared-memory arena: the host's one cache, shared by all worker processes.

``Arena.create`` in the supervisor, inherited by forked workers,
``Arena.attach(name)`` elsewhere.  Layout: ``layout.py``.
"""

from .arena import Arena

__all__ = ["Arena"]
