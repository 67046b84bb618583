"""Opaque TopRated page tokens: the (score, id) after which the next page starts.

A cursor rather than an offset, so that paging visits every movie once even
when writes move other movies between two page requests. The token names its
genre so that it cannot be replayed against another query.
"""

from __future__ import annotations

import base64
import binascii
import json
import math

from movieservice.core.ports import TopCursor


class InvalidPageToken(ValueError):
    pass


def encode_page_token(genre: str, cursor: TopCursor) -> str:
    payload = json.dumps({"g": genre, "s": cursor.score, "id": cursor.movie_id}, separators=(",", ":"))
    return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")


# A token this service issues is under 200 characters.
MAX_TOKEN_LENGTH = 1024


def decode_page_token(token: str, genre: str) -> TopCursor:
    if len(token) > MAX_TOKEN_LENGTH:
        raise InvalidPageToken("page_token is not a token this service issued")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        payload = json.loads(raw)
        score, movie_id, token_genre = payload["s"], payload["id"], payload["g"]
    except (binascii.Error, ValueError, KeyError, TypeError, RecursionError, OverflowError):
        raise InvalidPageToken("page_token is not a token this service issued") from None
    if not isinstance(score, (int, float)) or not math.isfinite(score) or not isinstance(movie_id, str):
        raise InvalidPageToken("page_token is not a token this service issued")
    if token_genre != genre:
        raise InvalidPageToken("page_token belongs to another genre; start again without it")
    return TopCursor(score=float(score), movie_id=movie_id)
