"""Opaque TopRated page tokens: the (score, id) after which the next page starts.

A cursor rather than an offset, so that paging visits every movie once even
when writes move other movies between two page requests. The token names its
genre so that it cannot be replayed against another query, and it is signed
(HMAC-SHA256 with a server key), so a client can neither forge one nor alter
one it was given: the server reads nothing from a token it did not issue.

Keys rotate without breaking clients in the middle of their paging: the first
key signs, every key verifies. Add the new key first in PAGE_TOKEN_KEYS, keep
the old one after it for as long as a client may hold its tokens, then drop it.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import json
import math
import secrets
from collections.abc import Sequence

from movieservice.core.ports import TopCursor

# A token this service issues is under 250 characters.
MAX_TOKEN_LENGTH = 1024
# 128 bits of the HMAC: forging one is a 2^-128 guess per try.
_MAC_BYTES = 16
# Names the purpose, so that a MAC made with the same key for anything else is no token.
_CONTEXT = b"movieservice TopRated page token v1\x00"
# Tokens issued lately, remembered: a token is the same for the same page
# (the key is fixed), and the first pages of popular genres are asked for over
# and over; issuing one (JSON, HMAC, base64) cost ~12 us, a TopRated call's
# largest piece of Python after reading its page.
_ISSUED_TOKENS_KEPT = 4096
NOT_ISSUED = "is not a token this service issued (or its key was retired); start again without it"


class InvalidPageToken(ValueError):
    pass


class PageTokens:
    """Issues and reads page tokens with `keys` (str or bytes): the first
    signs, every one verifies. No keys: a random one, which only this process
    knows (tokens then do not survive a restart, nor move between instances)."""

    def __init__(self, keys: Sequence[str | bytes] = ()) -> None:
        self._keys = [key.encode() if isinstance(key, str) else key for key in keys if key]
        if not self._keys:
            self._keys = [secrets.token_bytes(32)]
        self._issued = functools.lru_cache(maxsize=_ISSUED_TOKENS_KEPT)(self._issue)

    def encode(self, genre: str, cursor: TopCursor) -> str:
        return self._issued(genre, cursor.score, cursor.movie_id)

    def _issue(self, genre: str, score: float, movie_id: str) -> str:
        payload = json.dumps({"g": genre, "s": score, "id": movie_id}, separators=(",", ":"))
        body = _b64encode(payload.encode())
        return f"{body}.{_b64encode(self._mac(self._keys[0], body))}"

    def decode(self, token: str, genre: str) -> TopCursor:
        if len(token) > MAX_TOKEN_LENGTH or not token.isascii():
            raise InvalidPageToken(NOT_ISSUED)
        body, _, mac = token.partition(".")
        try:
            given = _b64decode(mac)
        except (binascii.Error, ValueError):
            raise InvalidPageToken(NOT_ISSUED) from None
        # Every key is tried, so the time taken does not tell which one matched.
        if not sum(hmac.compare_digest(given, self._mac(key, body)) for key in self._keys):
            raise InvalidPageToken(NOT_ISSUED)
        try:
            payload = json.loads(_b64decode(body))
            score, movie_id, token_genre = payload["s"], payload["id"], payload["g"]
        except (binascii.Error, ValueError, KeyError, TypeError, RecursionError, OverflowError):
            raise InvalidPageToken(NOT_ISSUED) from None
        if not isinstance(score, (int, float)) or not math.isfinite(score) or not isinstance(movie_id, str):
            raise InvalidPageToken(NOT_ISSUED)
        if token_genre != genre:
            raise InvalidPageToken("belongs to another genre; start again without it")
        return TopCursor(score=float(score), movie_id=movie_id)

    @staticmethod
    def _mac(key: bytes, body: str) -> bytes:
        return hmac.new(key, _CONTEXT + body.encode(), hashlib.sha256).digest()[:_MAC_BYTES]


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text.encode() + b"=" * (-len(text) % 4))
