"""The peer wire format: protobuf messages generated from ``geecache.proto``.

``geecache_pb2`` and its type stub ``geecache_pb2.pyi`` (what mypy reads) are
generated and committed; regenerate them with ``python scripts/gen_protobuf.py``
(``tests/unit/test_geecachepb.py`` fails while either is stale).  The script takes out protoc's runtime-version check, so the
module loads on every protobuf the package accepts (pyproject's floor is
aetcd's, 5.27.2).
"""

from .geecache_pb2 import (
    BatchItem, BatchRequest, BatchResponse, DeleteRequest, GetResponse, InvalidateRequest, RecentWrites,
    SetRequest, WarmRequest, WarmResponse, WriteBatch, WriteBatchItem, WriteBatchResponse, WriteItem,
    WriteResponse,
)

__all__ = ["BatchItem", "BatchRequest", "BatchResponse", "DeleteRequest", "GetResponse",
           "InvalidateRequest", "RecentWrites", "SetRequest", "WarmRequest", "WarmResponse", "WriteBatch", "WriteBatchItem",
           "WriteBatchResponse", "WriteItem", "WriteResponse"]
