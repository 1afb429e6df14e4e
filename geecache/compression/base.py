"""The Codec interface every compression codec implements."""

from __future__ import annotations

from ..errors import CodecError, DecodedTooLargeError

#: Default ceiling on one decompressed value.  Far above any item limit, yet a
#: forged length header or a decompression bomb from a peer cannot make a
#: worker allocate more than this.
MAX_DECOMPRESSED = 64 << 20


class Codec:
    """One compression format: a name, a wire id, and a bounded decompress.

    Subclasses implement ``_compress`` and ``_decompress``; the public
    methods turn every library error into CodecError, so a caller handles one
    exception whatever the codec.  ``_decompress`` must not produce (or
    allocate for) more than ``max_size`` bytes; it raises ``TooLarge`` instead.
    """

    #: Registry name (``get_codec(name)``) and config spelling.
    name: str = ""
    #: Small int that travels with a compressed value (protobuf ``codec``).
    id: int = -1

    def compress(self, data: bytes) -> bytes:
        """*data* compressed."""
        try:
            return self._compress(data)
        except Exception as exc:  # the library's own error type, whatever it is
            raise CodecError(f"{self.name}: cannot compress: {exc}") from exc

    def decompress(self, data: bytes, max_size: int = MAX_DECOMPRESSED) -> bytes:
        """*data* decompressed; CodecError when corrupt or over *max_size* bytes."""
        try:
            out = self._decompress(data, max_size)
        except TooLarge as exc:
            raise DecodedTooLargeError(
                f"{self.name}: decompressed size {exc.args[0]} exceeds the limit of {max_size} bytes"
            ) from None
        except CodecError:
            raise
        except Exception as exc:
            raise CodecError(f"{self.name}: corrupt input: {exc}") from exc
        if len(out) > max_size:  # backstop for codecs that could only check afterwards
            raise DecodedTooLargeError(
                f"{self.name}: decompressed size {len(out)} exceeds the limit of {max_size} bytes"
            )
        return out

    def _compress(self, data: bytes) -> bytes:
        raise NotImplementedError

    def _decompress(self, data: bytes, max_size: int) -> bytes:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<Codec {self.name} id={self.id}>"


class TooLarge(Exception):
    """Raised by ``_decompress`` when the output would pass max_size; args[0] = size (or '>N')."""
