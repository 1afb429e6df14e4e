"""The cluster: the ring, the peer pool and its transport, owner writes, the breaker,
the pause guard and the etcd registry.
"""
