"""What a call can end with besides its answer: the service's own errors.

Each names an outcome a client can act on; its message is safe to show (it
never carries driver or exception text). The transport maps them to its
status codes in one place (`movieservice.grpcserver.status`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class ServiceError(Exception):
    """The call cannot be answered; `str(error)` is the message for the client."""


@dataclass(frozen=True)
class Violation:
    """One problem with a request, named by its field path (`movie.imdb.rating`)."""

    field: str
    description: str

    def __str__(self) -> str:
        return f"{self.field}: {self.description}"


class InvalidArgument(ServiceError):
    def __init__(self, violations: Sequence[Violation]) -> None:
        super().__init__("; ".join(str(v) for v in violations))
        self.violations = tuple(violations)


class NotFound(ServiceError):
    pass


class Unavailable(ServiceError):
    """A dependency the answer needs cannot be reached; retrying later may work."""


class DeadlineExceeded(ServiceError):
    pass


class Unauthenticated(ServiceError):
    pass


class PermissionDenied(ServiceError):
    pass


class ResourceExhausted(ServiceError):
    """Too much from this caller (or in total) for now; retrying later with backoff may work."""
