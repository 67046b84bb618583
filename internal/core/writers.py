"""Who may write, and how hard a stranger may try.

A writer is named: by its bearer token (AUTH_TOKENS holds several, each with
a name, so they rotate one at a time) or by the subject of its verified
client certificate (mTLS, an allow-list). The name, never the token, goes
into the write's log line. Failures are counted by reason, and an address
that keeps failing is refused for a while before its credential is even
looked at, so guessing a token costs the guesser time.
"""

from __future__ import annotations

import hmac
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from movieservice.core.errors import PermissionDenied, ResourceExhausted, Unauthenticated
from movieservice.core.ports import ServiceEvents

# Failed attempts an address may make a minute (AUTH_FAILURES_PER_MINUTE):
# all at once, then one more every 6 s.
FAILURES_PER_MINUTE = 10
# Addresses remembered at once; the least recently failing is forgotten first.
MAX_TRACKED_PEERS = 10_000


@dataclass(frozen=True)
class Credentials:
    """What a caller presented, as plain values the transport extracted."""

    authorization: str | None = None  # the "authorization" metadata ("Bearer <token>")
    peer: str = ""  # the caller's network address, without its port
    certificate_subject: str | None = None  # common name of a verified client certificate (mTLS)


class FailureLimiter:
    """Per address, a token bucket of failed attempts: each failure takes one,
    they come back at `per_second`; an address with none left is refused."""

    @classmethod
    def per_minute(cls, failures: int) -> FailureLimiter | None:
        """`failures` a minute per address, in a burst or spread; 0: no limit (None)."""
        return cls(burst=failures, per_second=failures / 60) if failures else None

    def __init__(
        self,
        burst: float = FAILURES_PER_MINUTE,
        per_second: float = FAILURES_PER_MINUTE / 60,
        max_peers: int = MAX_TRACKED_PEERS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._burst = burst
        self._per_second = per_second
        self._max_peers = max_peers
        self._clock = clock
        # peer -> (allowance left, when it was counted)
        self._peers: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def retry_after(self, peer: str) -> float:
        """0 when `peer` may try now, else the seconds until it may."""
        allowance = self._allowance(peer)
        return 0.0 if allowance >= 1 else (1 - allowance) / self._per_second

    def failed(self, peer: str) -> None:
        self._peers[peer] = (self._allowance(peer) - 1, self._clock())
        self._peers.move_to_end(peer)
        while len(self._peers) > self._max_peers:
            self._peers.popitem(last=False)

    def _allowance(self, peer: str) -> float:
        if peer not in self._peers:
            return self._burst
        left, since = self._peers[peer]
        return min(self._burst, left + (self._clock() - since) * self._per_second)


class Writers:
    """The writers: `tokens` maps each writer's name to its bearer token,
    `subjects` lists the client-certificate subjects allowed to write (None
    configured: nobody may write); `limiter` bounds failed attempts per
    address (None: no bound)."""

    def __init__(
        self,
        tokens: Mapping[str, str],
        events: ServiceEvents,
        subjects: Sequence[str] = (),
        limiter: FailureLimiter | None = None,
    ) -> None:
        self._tokens = [(name, token.encode()) for name, token in tokens.items() if token]
        self._subjects = frozenset(subjects)
        self._events = events
        self._limiter = limiter

    def check(self, credentials: Credentials) -> str:
        """The name of the writer `credentials` identify.

        PermissionDenied when writes are disabled; ResourceExhausted when the
        caller's address failed too often lately; Unauthenticated when the
        credential is missing or not a known token (compared in constant time).
        """
        if not self._tokens and not self._subjects:
            self._events.auth_failure("writes_disabled")
            raise PermissionDenied("writes are disabled: the server has no AUTH_TOKEN")
        subject = credentials.certificate_subject
        if subject is not None and subject in self._subjects:
            return f"certificate:{subject}"
        wait = self._limiter.retry_after(credentials.peer) if self._limiter else 0
        if wait:
            self._events.auth_failure("rate_limited")
            raise ResourceExhausted(f"too many failed authentications from this address; retry in {math.ceil(wait)} s")
        scheme, _, token = (credentials.authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            self._fail(credentials.peer, "missing")
            raise Unauthenticated("Upsert needs the metadata 'authorization: Bearer <token>'")
        given = token.strip().encode()
        # Every token is compared, so the time taken does not tell which one matched.
        matched = [name for name, known in self._tokens if hmac.compare_digest(given, known)]
        if not matched:
            self._fail(credentials.peer, "invalid")
            raise Unauthenticated("the bearer token is not valid")
        return matched[0]

    def _fail(self, peer: str, reason: str) -> None:
        if self._limiter:
            self._limiter.failed(peer)
        self._events.auth_failure(reason)
