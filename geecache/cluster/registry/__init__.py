"""etcd registration and discovery: each host's key under a lease, a prefix watch.

The registrar (`registrar_main`, run in a child of the supervisor) holds the
host's one etcd session and hands the sorted member list to a callback.
Importing this package never imports grpc/aetcd, so the supervisor, which
forks, may import it; the client is created only inside `run_registrar`.
"""

from geecache.cluster.registry.config import (
    DEFAULT_ETCD_PORT,
    REGISTRY_PREFIX,
    parse_endpoints,
    registry_key,
    validate_advertise,
)
from geecache.cluster.registry.registrar import registrar_main, run_registrar

__all__ = [
    "DEFAULT_ETCD_PORT",
    "REGISTRY_PREFIX",
    "parse_endpoints",
    "registry_key",
    "registrar_main",
    "run_registrar",
    "validate_advertise",
]
