"""The peer wire format: protobuf messages generated from ``geecache.proto``.

``geecache_pb2`` is generated and committed; regenerate it with
``.venv/bin/python -m grpc_tools.protoc -I geecache/geecachepb
--python_out=geecache/geecachepb geecache/geecachepb/geecache.proto``
(``tests/test_geecachepb.py`` fails while it is stale).  Its gencode
(protoc 7.35.1) needs protobuf runtime >=7.35.1,<8, as pyproject pins.
"""

from .geecache_pb2 import (
    BatchItem, BatchRequest, BatchResponse, DeleteRequest, GetResponse, InvalidateRequest, RecentWrites,
    SetRequest, WriteBatch, WriteBatchItem, WriteBatchResponse, WriteItem, WriteResponse,
)

__all__ = ["BatchItem", "BatchRequest", "BatchResponse", "DeleteRequest", "GetResponse",
           "InvalidateRequest", "RecentWrites", "SetRequest", "WriteBatch", "WriteBatchItem",
           "WriteBatchResponse", "WriteItem", "WriteResponse"]
