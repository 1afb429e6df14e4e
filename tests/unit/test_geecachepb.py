"""The committed protobuf module matches the .proto, and decodes safely."""

import re
import sys
from pathlib import Path

import pytest
from google.protobuf.message import DecodeError
from hypothesis import given, settings, strategies as st

from geecache import geecachepb
from geecache.geecachepb import DeleteRequest, GetResponse, InvalidateRequest, SetRequest, WriteResponse

PB_DIR = Path(geecachepb.__file__).parent

# protoc stamps its own version in a comment; a different protoc with the same .proto is not
# a stale module.
_VERSION = re.compile(r"^# Protobuf Python Version: .*$", re.MULTILINE)


def _normalise(text: str) -> str:
    return _VERSION.sub("", text)


@pytest.mark.procs
def test_committed_module_is_regenerated_from_the_proto(tmp_path):
    sys.path.insert(0, str(PB_DIR.parents[1] / "scripts"))
    try:
        import gen_protobuf
    finally:
        sys.path.pop(0)
    for name, fresh in gen_protobuf.generate_files().items():  # the module and its type stub
        committed = (PB_DIR / name).read_text()
        assert _normalise(fresh) == _normalise(committed), (
            f"{name} is stale; regenerate: python scripts/gen_protobuf.py")


def test_the_module_has_no_runtime_version_check():
    # The check would refuse every protobuf older than the protoc that generated the module.
    committed = (PB_DIR / "geecache_pb2.py").read_text()
    assert "runtime_version" not in committed and "AddSerializedFile" in committed


def test_normalisation_only_hides_version_stamps():
    committed = (PB_DIR / "geecache_pb2.py").read_text()
    normal = _normalise(committed)
    assert "Protobuf Python Version" not in normal
    assert len(committed) - len(normal) < 80
    assert "AddSerializedFile" in normal


def _repeated(field) -> bool:
    # is_repeated is protobuf 6's; label (deprecated there) is what 5.x has.
    if hasattr(field, "is_repeated"):
        return field.is_repeated
    return field.label == field.LABEL_REPEATED


def test_fields_match_the_design():
    def fields(cls):
        return {f.name: (f.number, f.type) for f in cls.DESCRIPTOR.fields}

    D = SetRequest.DESCRIPTOR.fields[0]
    string, bytes_, uint32, double = D.TYPE_STRING, D.TYPE_BYTES, D.TYPE_UINT32, D.TYPE_DOUBLE
    uint64, bool_ = D.TYPE_UINT64, D.TYPE_BOOL
    assert SetRequest.DESCRIPTOR.full_name == "geecachepb.SetRequest"
    assert fields(GetResponse) == {"value": (1, bytes_), "codec": (2, uint32), "expire_at": (3, double),
                                   "ttl_left": (5, double)}
    assert fields(SetRequest) == {
        "group": (1, string), "key": (2, string), "value": (3, bytes_), "codec": (4, uint32),
        "ttl": (5, double), "version": (6, uint64), "deadline": (7, double), "timeout": (8, double),
    }
    assert fields(DeleteRequest) == {"version": (1, uint64), "deadline": (2, double), "timeout": (3, double)}
    assert fields(WriteResponse) == {"applied": (1, bool_), "existed": (2, bool_), "version": (3, uint64),
                                     "late": (4, bool_)}
    assert fields(InvalidateRequest) == {"group": (1, string), "keys": (2, string)}
    assert _repeated(InvalidateRequest.DESCRIPTOR.fields_by_name["keys"])
    # Only what is sent is defined; GET carries group and key in the path.
    assert set(geecachepb.geecache_pb2.DESCRIPTOR.message_types_by_name) == {
        "GetResponse", "SetRequest", "DeleteRequest", "WriteResponse", "InvalidateRequest",
        "BatchItem", "BatchRequest", "BatchResponse", "RecentWrites",
        "WriteItem", "WriteBatch", "WriteBatchItem", "WriteBatchResponse", "WarmRequest", "WarmResponse"}


def test_write_batch_fields_match_the_design():
    from geecache.geecachepb import WriteBatch, WriteBatchItem, WriteBatchResponse, WriteItem

    def fields(cls):
        return {f.name: (f.number, f.type) for f in cls.DESCRIPTOR.fields}

    D = WriteItem.DESCRIPTOR.fields[0]
    assert fields(WriteItem) == {
        "key": (1, D.TYPE_STRING), "value": (2, D.TYPE_BYTES), "codec": (3, D.TYPE_UINT32),
        "ttl": (4, D.TYPE_DOUBLE), "version": (5, D.TYPE_UINT64), "deadline": (6, D.TYPE_DOUBLE),
        "delete": (7, D.TYPE_BOOL), "timeout": (8, D.TYPE_DOUBLE)}
    assert fields(WriteBatch) == {"group": (1, D.TYPE_STRING), "items": (2, D.TYPE_MESSAGE)}
    assert fields(WriteBatchItem) == {"status": (1, D.TYPE_UINT32), "result": (2, D.TYPE_MESSAGE),
                                      "error": (3, D.TYPE_STRING)}
    assert fields(WriteBatchResponse) == {"items": (1, D.TYPE_MESSAGE)}


def test_an_older_peers_messages_read_as_unversioned():
    # A SetRequest from before versions, and a DELETE with no body.
    old = SetRequest(group="g", key="k", value=b"v", ttl=3.0).SerializeToString()
    msg = SetRequest.FromString(old)
    assert (msg.version, msg.deadline) == (0, 0.0)
    assert DeleteRequest.FromString(b"") == DeleteRequest(version=0, deadline=0.0)
    # Versions use the whole 63 bits of an HLC timestamp.
    big = SetRequest(version=(1 << 63) - 1).SerializeToString()
    assert SetRequest.FromString(big).version == (1 << 63) - 1


def test_batch_fields_match_the_design():
    from geecache.geecachepb import BatchItem, BatchRequest, BatchResponse

    def fields(cls):
        return {f.name: (f.number, f.type) for f in cls.DESCRIPTOR.fields}

    D = BatchItem.DESCRIPTOR.fields[0]
    string, bytes_, uint32, double, message = D.TYPE_STRING, D.TYPE_BYTES, D.TYPE_UINT32, D.TYPE_DOUBLE, D.TYPE_MESSAGE
    assert fields(BatchItem) == {
        "key": (1, string), "value": (2, bytes_), "codec": (3, uint32), "ttl": (4, double),
        "status": (5, uint32), "expire_at": (6, double), "error": (7, string), "ttl_left": (8, double)}
    assert fields(BatchRequest) == {"group": (1, string), "items": (2, message)}
    assert fields(BatchResponse) == {"items": (1, message)}
    assert _repeated(BatchRequest.DESCRIPTOR.fields_by_name["items"])


def test_dropped_field_number_stays_reserved():
    # minute_qps (4) was dropped: an old owner's field 4 is skipped, never misread.
    old = b"\x0a\x01v" + b"\x21" + b"\x00" * 8  # value=b"v", field 4 (double) = 0.0
    assert GetResponse.FromString(old).value == b"v"
    proto = (PB_DIR / "geecache.proto").read_text()
    assert "reserved 4;" in proto and 'reserved "minute_qps";' in proto


def test_round_trips():
    messages = [
        GetResponse(value=b"\x00\xff" * 100, codec=4, expire_at=1_700_000_000.25),
        GetResponse(value=b""),
        SetRequest(group="g", key="k", value=b"v", codec=3, ttl=30.0),
        InvalidateRequest(group="g", keys=["a", "b", "c"]),
        SetRequest(group="g", key="k", value=b"v", version=123456789 << 11, deadline=1_700_000_002.5),
        DeleteRequest(version=5, deadline=1.5),
        WriteResponse(applied=True, existed=True, version=7),
        WriteResponse(late=True),
    ]
    for msg in messages:
        data = msg.SerializeToString()
        back = type(msg).FromString(data)
        assert back == msg
    assert GetResponse.FromString(b"").expire_at == 0  # absent = no expiry


@settings(max_examples=100, deadline=None)
@given(value=st.binary(max_size=2048), codec=st.integers(0, 2**32 - 1),
       expire_at=st.floats(allow_nan=False))
def test_get_response_round_trip_property(value, codec, expire_at):
    msg = GetResponse(value=value, codec=codec, expire_at=expire_at)
    back = GetResponse.FromString(msg.SerializeToString())
    assert (back.value, back.codec) == (value, codec)
    assert back.expire_at == expire_at


@pytest.mark.parametrize("cls", [GetResponse, SetRequest, DeleteRequest, WriteResponse, InvalidateRequest])
@pytest.mark.parametrize(
    "garbage",
    [
        b"\xff\xff\xff\xff",           # truncated varint tag
        b"\x0a\x05ab",                 # length 5, 2 bytes follow
        b"\x0a\xff\xff\xff\xff\x0f",   # absurd length
        b"\x07",                       # wire type 7 does not exist
        b"\x00\x01",                   # field number 0
    ],
)
def test_garbage_raises_decode_error(cls, garbage):
    with pytest.raises(DecodeError):
        cls.FromString(garbage)


def test_invalid_utf8_in_string_field_raises_decode_error():
    with pytest.raises(DecodeError):
        SetRequest.FromString(b"\x12\x02\xff\xfe")  # key = invalid UTF-8


def test_recent_writes_fields_match_the_design():
    from geecache.geecachepb import RecentWrites

    D = RecentWrites.DESCRIPTOR.fields[0]
    assert {f.name: (f.number, f.type) for f in RecentWrites.DESCRIPTOR.fields} == {
        "covered": (1, D.TYPE_BOOL), "groups": (2, D.TYPE_MESSAGE)}
    assert RecentWrites.DESCRIPTOR.fields_by_name["groups"].is_repeated


def test_warm_up_fields_match_the_design():
    from geecache.geecachepb import WarmRequest, WarmResponse

    def fields(cls):
        return {f.name: (f.number, f.type) for f in cls.DESCRIPTOR.fields}

    D = WarmRequest.DESCRIPTOR.fields[0]
    assert fields(WarmRequest) == {
        "group": (1, D.TYPE_STRING), "to": (2, D.TYPE_STRING), "members": (3, D.TYPE_STRING),
        "max_bytes": (4, D.TYPE_UINT64), "seconds": (5, D.TYPE_DOUBLE)}
    assert fields(WarmResponse) == {"unsure": (1, D.TYPE_BOOL), "cold": (2, D.TYPE_BOOL),
                                    "items": (3, D.TYPE_MESSAGE), "truncated": (4, D.TYPE_BOOL)}
