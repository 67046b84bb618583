"""The one place where the service's errors become gRPC statuses.

INVALID_ARGUMENT carries a `google.rpc.BadRequest` detail (one field
violation per problem), readable with grpcio-status and its equivalents in
other languages; the plain message lists the same problems. Anything else
that escapes a handler is INTERNAL with a fixed message and an error id,
which is also in the log line with the traceback: no exception text reaches
a client.
"""

from __future__ import annotations

import logging
import secrets

import grpc
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from movieservice.core.errors import (
    DeadlineExceeded,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    ServiceError,
    Unauthenticated,
    Unavailable,
)

log = logging.getLogger(__name__)

CODES: dict[type[ServiceError], grpc.StatusCode] = {
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    Unavailable: grpc.StatusCode.UNAVAILABLE,
    DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
}


def status_of(error: ServiceError) -> grpc.Status:
    """The status a client gets for `error`."""
    if isinstance(error, InvalidArgument):
        return _invalid_argument(error)
    code = CODES.get(type(error), grpc.StatusCode.INTERNAL)
    return _Status(code, str(error), ())


def internal_error(method: str) -> grpc.Status:
    """For an exception that is not a ServiceError: logged with an id the client is given."""
    error_id = secrets.token_hex(6)
    log.exception("unexpected error in %s (error id %s)", method, error_id)
    return _Status(grpc.StatusCode.INTERNAL, f"internal error (error id {error_id})", ())


def _invalid_argument(error: InvalidArgument) -> grpc.Status:
    detail = error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
            for v in error.violations
        ]
    )
    status = status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message=str(error))
    status.details.add().Pack(detail)
    converted: grpc.Status = rpc_status.to_status(status)
    return converted


class _Status(grpc.Status):
    def __init__(self, code: grpc.StatusCode, details: str, trailing_metadata: tuple[tuple[str, str], ...]) -> None:
        self.code = code
        self.details = details
        self.trailing_metadata = trailing_metadata
