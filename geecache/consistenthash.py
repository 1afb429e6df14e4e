"""The ring's import path before the cluster package: ``geecache.cluster.consistenthash``.

Kept so scripts written against the flat layout (the shared benchmark anchors
among them) keep working; new code imports ``geecache.cluster.consistenthash``.
"""

from geecache.cluster.consistenthash import DEFAULT_REPLICAS, Ring, members_digest

__all__ = ["DEFAULT_REPLICAS", "Ring", "members_digest"]
