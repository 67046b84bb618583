"""Writing response messages straight from cached bytes.

A cached Movie or Theater is already a serialized protobuf; a response that
holds it is that message's field tag, its length and the bytes, so responses
are assembled without parsing and re-serializing what the cache returned.
(Field numbers are those of proto/movies/v1/movies.proto.) Transport code:
the use cases hand over the cached bytes, the servicer frames them.

These run on every TopRated and Nearby call, so they avoid a function call per
field: tags are constants and the common lengths are spelled out.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

_DOUBLE = struct.Struct("<d")
_ZERO_DOUBLE = _DOUBLE.pack(0.0)
# Field 1, wire type 2 (length-delimited): GetResponse.movie,
# TopRatedResponse.movies, NearbyResponse.theaters, NearbyTheater.theater.
_FIELD_1 = b"\n"
# Field 2, wire type 2: TopRatedResponse.next_page_token.
_FIELD_2 = b"\x12"
# Field 2, wire type 1 (64-bit): NearbyTheater.distance_km.
_FIELD_2_DOUBLE = b"\x11"


def varint(value: int) -> bytes:
    """`value` (>= 0) as a protobuf varint."""
    if value < 0x80:
        return bytes((value,))
    if value < 0x4000:
        return bytes((value & 0x7F | 0x80, value >> 7))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def get_response(movie: bytes) -> bytes:
    """GetResponse{movie}."""
    return _FIELD_1 + varint(len(movie)) + movie


def top_rated_response(movies: list[bytes], next_page_token: str) -> bytes:
    """TopRatedResponse{movies, next_page_token}."""
    # Each movie copied once, by the join (not also into a field of its own).
    parts: list[bytes] = []
    for movie in movies:
        parts += (_FIELD_1 + varint(len(movie)), movie)
    if next_page_token:
        token = next_page_token.encode()
        parts.append(_FIELD_2 + varint(len(token)) + token)
    return b"".join(parts)


def nearby_response(theaters: Sequence[tuple[bytes, float]]) -> bytes:
    """NearbyResponse{theaters: [NearbyTheater{theater, distance_km}]}."""
    parts: list[bytes] = []
    for theater, km in theaters:
        header = _FIELD_1 + varint(len(theater))
        distance = _DOUBLE.pack(km)
        # proto3 leaves out a distance of 0.0 (a theater at the very point asked about).
        distance = _FIELD_2_DOUBLE + distance if distance != _ZERO_DOUBLE else b""
        parts += (_FIELD_1 + varint(len(header) + len(theater) + len(distance)) + header, theater, distance)
    return b"".join(parts)
