from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetResponse(_message.Message):
    __slots__ = ("value", "codec", "expire_at", "ttl_left")
    VALUE_FIELD_NUMBER: _ClassVar[int]
    CODEC_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_AT_FIELD_NUMBER: _ClassVar[int]
    TTL_LEFT_FIELD_NUMBER: _ClassVar[int]
    value: bytes
    codec: int
    expire_at: float
    ttl_left: float
    def __init__(self, value: _Optional[bytes] = ..., codec: _Optional[int] = ..., expire_at: _Optional[float] = ..., ttl_left: _Optional[float] = ...) -> None: ...

class SetRequest(_message.Message):
    __slots__ = ("group", "key", "value", "codec", "ttl", "version", "deadline", "timeout")
    GROUP_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    CODEC_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    group: str
    key: str
    value: bytes
    codec: int
    ttl: float
    version: int
    deadline: float
    timeout: float
    def __init__(self, group: _Optional[str] = ..., key: _Optional[str] = ..., value: _Optional[bytes] = ..., codec: _Optional[int] = ..., ttl: _Optional[float] = ..., version: _Optional[int] = ..., deadline: _Optional[float] = ..., timeout: _Optional[float] = ...) -> None: ...

class DeleteRequest(_message.Message):
    __slots__ = ("version", "deadline", "timeout")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    version: int
    deadline: float
    timeout: float
    def __init__(self, version: _Optional[int] = ..., deadline: _Optional[float] = ..., timeout: _Optional[float] = ...) -> None: ...

class WriteResponse(_message.Message):
    __slots__ = ("applied", "existed", "version", "late")
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    EXISTED_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    LATE_FIELD_NUMBER: _ClassVar[int]
    applied: bool
    existed: bool
    version: int
    late: bool
    def __init__(self, applied: _Optional[bool] = ..., existed: _Optional[bool] = ..., version: _Optional[int] = ..., late: _Optional[bool] = ...) -> None: ...

class InvalidateRequest(_message.Message):
    __slots__ = ("group", "keys")
    GROUP_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    group: str
    keys: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, group: _Optional[str] = ..., keys: _Optional[_Iterable[str]] = ...) -> None: ...

class BatchItem(_message.Message):
    __slots__ = ("key", "value", "codec", "ttl", "status", "expire_at", "error", "ttl_left")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    CODEC_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_AT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    TTL_LEFT_FIELD_NUMBER: _ClassVar[int]
    key: str
    value: bytes
    codec: int
    ttl: float
    status: int
    expire_at: float
    error: str
    ttl_left: float
    def __init__(self, key: _Optional[str] = ..., value: _Optional[bytes] = ..., codec: _Optional[int] = ..., ttl: _Optional[float] = ..., status: _Optional[int] = ..., expire_at: _Optional[float] = ..., error: _Optional[str] = ..., ttl_left: _Optional[float] = ...) -> None: ...

class BatchRequest(_message.Message):
    __slots__ = ("group", "items")
    GROUP_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    group: str
    items: _containers.RepeatedCompositeFieldContainer[BatchItem]
    def __init__(self, group: _Optional[str] = ..., items: _Optional[_Iterable[_Union[BatchItem, _Mapping]]] = ...) -> None: ...

class BatchResponse(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[BatchItem]
    def __init__(self, items: _Optional[_Iterable[_Union[BatchItem, _Mapping]]] = ...) -> None: ...

class RecentWrites(_message.Message):
    __slots__ = ("covered", "groups")
    COVERED_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    covered: bool
    groups: _containers.RepeatedCompositeFieldContainer[InvalidateRequest]
    def __init__(self, covered: _Optional[bool] = ..., groups: _Optional[_Iterable[_Union[InvalidateRequest, _Mapping]]] = ...) -> None: ...

class WriteItem(_message.Message):
    __slots__ = ("key", "value", "codec", "ttl", "version", "deadline", "delete", "timeout")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    CODEC_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_FIELD_NUMBER: _ClassVar[int]
    DELETE_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    key: str
    value: bytes
    codec: int
    ttl: float
    version: int
    deadline: float
    delete: bool
    timeout: float
    def __init__(self, key: _Optional[str] = ..., value: _Optional[bytes] = ..., codec: _Optional[int] = ..., ttl: _Optional[float] = ..., version: _Optional[int] = ..., deadline: _Optional[float] = ..., delete: _Optional[bool] = ..., timeout: _Optional[float] = ...) -> None: ...

class WriteBatch(_message.Message):
    __slots__ = ("group", "items")
    GROUP_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    group: str
    items: _containers.RepeatedCompositeFieldContainer[WriteItem]
    def __init__(self, group: _Optional[str] = ..., items: _Optional[_Iterable[_Union[WriteItem, _Mapping]]] = ...) -> None: ...

class WriteBatchItem(_message.Message):
    __slots__ = ("status", "result", "error")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    status: int
    result: WriteResponse
    error: str
    def __init__(self, status: _Optional[int] = ..., result: _Optional[_Union[WriteResponse, _Mapping]] = ..., error: _Optional[str] = ...) -> None: ...

class WriteBatchResponse(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[WriteBatchItem]
    def __init__(self, items: _Optional[_Iterable[_Union[WriteBatchItem, _Mapping]]] = ...) -> None: ...

class WarmRequest(_message.Message):
    __slots__ = ("group", "to", "members", "max_bytes", "seconds")
    GROUP_FIELD_NUMBER: _ClassVar[int]
    TO_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    MAX_BYTES_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    group: str
    to: str
    members: _containers.RepeatedScalarFieldContainer[str]
    max_bytes: int
    seconds: float
    def __init__(self, group: _Optional[str] = ..., to: _Optional[str] = ..., members: _Optional[_Iterable[str]] = ..., max_bytes: _Optional[int] = ..., seconds: _Optional[float] = ...) -> None: ...

class WarmResponse(_message.Message):
    __slots__ = ("unsure", "cold", "items", "truncated")
    UNSURE_FIELD_NUMBER: _ClassVar[int]
    COLD_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    unsure: bool
    cold: bool
    items: _containers.RepeatedCompositeFieldContainer[BatchItem]
    truncated: bool
    def __init__(self, unsure: _Optional[bool] = ..., cold: _Optional[bool] = ..., items: _Optional[_Iterable[_Union[BatchItem, _Mapping]]] = ..., truncated: _Optional[bool] = ...) -> None: ...
