"""The one bytes-or-str conversion (``geecache.limits.as_bytes``) the client, stores and groups share."""

import pytest

from geecache.errors import ValueTooLargeError
from geecache.limits import as_bytes, check_value


@pytest.mark.parametrize("value, expected", [
    (b"raw", b"raw"), (bytearray(b"ba"), b"ba"), (memoryview(b"mv"), b"mv"),
    ("Tom ü", "Tom ü".encode("utf-8")), ("", b""),
])
def test_bytes_like_and_str_become_bytes(value, expected):
    out = as_bytes(value)
    assert out == expected and type(out) is bytes


@pytest.mark.parametrize("bad", [None, 1, 1.5, ["a"], {"a": 1}])
def test_anything_else_is_a_type_error_naming_it(bad):
    with pytest.raises(TypeError, match=f"value must be bytes or str, got {type(bad).__name__}"):
        as_bytes(bad)
    with pytest.raises(TypeError, match="value must be bytes or str"):
        check_value(bad)


def test_check_value_converts_then_bounds():
    assert check_value("ab", 2) == b"ab"
    with pytest.raises(ValueTooLargeError):
        check_value("abc", 2)
