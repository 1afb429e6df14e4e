"""The host process: the supervisor (arbiter) and the kinds of children it forks.

``main.main`` is the entry point of ``supervisor.py`` and ``python -m geecache``;
``arbiter.Arbiter`` is the loop; ``children`` holds one class per kind of child
(worker, registrar) with its body and respawn policy.  What every child does with
the signals it inherits is ``geecache.signals``, below this package, since the
workers import it too.  Kept free of imports here.
"""
