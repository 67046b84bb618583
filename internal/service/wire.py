"""Writing response messages straight from cached bytes.

A cached Movie or Theater is already a serialized protobuf; a response that
holds it is that message's field tag, its length and the bytes, so responses
are assembled without parsing and re-serializing what the cache returned.
(Field numbers are those of proto/movies/v1/movies.proto.)
"""

from __future__ import annotations

import struct

_DOUBLE = struct.Struct("<d")


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def length_delimited(field: int, payload: bytes) -> bytes:
    """Field `field` (wire type 2) holding `payload`."""
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def double(field: int, value: float) -> bytes:
    """Field `field` (wire type 1) holding a double."""
    return _varint(field << 3 | 1) + _DOUBLE.pack(value)


def get_response(movie: bytes) -> bytes:
    """GetResponse{movie} (on every cache hit: the common lengths are spelled out)."""
    size = len(movie)
    if size < 0x80:
        return b"\n" + bytes((size,)) + movie
    if size < 0x4000:
        return b"\n" + bytes((size & 0x7F | 0x80, size >> 7)) + movie
    return length_delimited(1, movie)


def top_rated_response(movies: list[bytes], next_page_token: str) -> bytes:
    """TopRatedResponse{movies, next_page_token}."""
    parts = [length_delimited(1, movie) for movie in movies]
    if next_page_token:
        parts.append(length_delimited(2, next_page_token.encode()))
    return b"".join(parts)


def nearby_response(theaters: list[tuple[bytes, float]]) -> bytes:
    """NearbyResponse{theaters: [NearbyTheater{theater, distance_km}]}."""
    return b"".join(length_delimited(1, length_delimited(1, theater) + double(2, km)) for theater, km in theaters)
