"""Just enough of the protobuf wire format to salvage a message protobuf refuses.

protobuf parses a message whole or not at all: one sample with invalid UTF-8 in a
string field makes the whole ``ScoreBatchRequest`` unparseable. Walking the
outer message's fields by hand lets the server parse each sample on its own, so a
bad sample costs its own result, and a bad stream message still gets its
``request_id`` back when that field itself is sound.
"""

from __future__ import annotations

__all__ = ["WireFormatError", "length_delimited_fields"]

_VARINT, _FIXED64, _LENGTH_DELIMITED, _FIXED32 = 0, 1, 2, 5


class WireFormatError(ValueError):
    """The bytes are not a protobuf message at all (truncated, or an unknown wire type)."""


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while pos < len(data):
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift >= 64:
            raise WireFormatError("varint longer than 10 bytes")
    raise WireFormatError("truncated varint")


def length_delimited_fields(data: bytes, field_number: int) -> list[bytes]:
    """The raw bytes of every occurrence of length-delimited field ``field_number``,
    in order; other fields are skipped. Raises :class:`WireFormatError` when the
    message's framing is broken."""
    found: list[bytes] = []
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire_type = key >> 3, key & 7
        if wire_type == _VARINT:
            _, pos = _varint(data, pos)
        elif wire_type == _FIXED64:
            pos += 8
        elif wire_type == _FIXED32:
            pos += 4
        elif wire_type == _LENGTH_DELIMITED:
            size, pos = _varint(data, pos)
            if pos + size > len(data):
                raise WireFormatError("length-delimited field runs past the end")
            if number == field_number:
                found.append(data[pos : pos + size])
            pos += size
        else:
            raise WireFormatError(f"unsupported wire type {wire_type}")
        if pos > len(data):
            raise WireFormatError("field runs past the end")
    return found
