"""Typed exceptions of the skewless client.

Every failed call raises a subclass of `SkewlessClientError` chosen by the gRPC status
code; it keeps the code, the server's message and the parsed `google.rpc` details:
`ErrorInfo` (`reason`, `domain`, `metadata`), `BadRequest` (`field_violations`) and
`RetryInfo` (`retry_delay`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

__all__ = [
    "AbortedError",
    "AlreadyExistsError",
    "CancelledError",
    "DataLossError",
    "DeadlineExceededError",
    "FailedPreconditionError",
    "FieldViolation",
    "InternalError",
    "InvalidArgumentError",
    "NotFoundError",
    "OutOfRangeError",
    "PermissionDeniedError",
    "ResourceExhaustedError",
    "SkewlessClientError",
    "UnauthenticatedError",
    "UnavailableError",
    "UnimplementedError",
    "UnknownError",
    "from_rpc_error",
]


@dataclass(frozen=True)
class FieldViolation:
    """One bad request field, from `google.rpc.BadRequest`.

    Attributes:
        field: The request field path, e.g. `entities[driver_id]`.
        description: What is wrong with it.

    """

    field: str
    description: str


class SkewlessClientError(Exception):
    """Root of every error the client raises.

    Attributes:
        code: The gRPC status code (None when the error did not come from a call).
        message: The server's message.
        reason: `ErrorInfo.reason` (UPPER_SNAKE_CASE), or "" when absent.
        domain: `ErrorInfo.domain`, or "".
        metadata: `ErrorInfo.metadata`: the dynamic values the message mentions.
        field_violations: `BadRequest.field_violations`, for bad input.
        retry_delay: `RetryInfo.retry_delay` in seconds, when the call may be retried.
        details: Every detail as received (`google.protobuf.Any`).

    """

    code: grpc.StatusCode | None = None

    def __init__(
        self,
        message: str,
        *,
        code: grpc.StatusCode | None = None,
        details: Sequence[any_pb2.Any] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details = list(details)
        self.reason = ""
        self.domain = ""
        self.metadata: dict[str, str] = {}
        self.field_violations: list[FieldViolation] = []
        self.retry_delay: float | None = None
        for detail in self.details:
            self._read_detail(detail)

    def _read_detail(self, detail: any_pb2.Any) -> None:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            self.reason, self.domain, self.metadata = info.reason, info.domain, dict(info.metadata)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            self.field_violations.extend(
                FieldViolation(field=v.field, description=v.description)
                for v in bad.field_violations
            )
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            self.retry_delay = retry.retry_delay.ToTimedelta().total_seconds()

    def __str__(self) -> str:
        name = self.code.name if self.code is not None else "ERROR"
        return f"{name}: {self.message}"


class CancelledError(SkewlessClientError):
    """The call was cancelled (CANCELLED)."""

    code = grpc.StatusCode.CANCELLED


class UnknownError(SkewlessClientError):
    """The server failed in an unknown way (UNKNOWN)."""

    code = grpc.StatusCode.UNKNOWN


class InvalidArgumentError(SkewlessClientError):
    """The request is malformed; see `field_violations` (INVALID_ARGUMENT)."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class DeadlineExceededError(SkewlessClientError):
    """The call did not finish before its deadline (DEADLINE_EXCEEDED)."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class NotFoundError(SkewlessClientError):
    """A named feature, view, service, entity or job does not exist (NOT_FOUND)."""

    code = grpc.StatusCode.NOT_FOUND


class AlreadyExistsError(SkewlessClientError):
    """The thing to create exists already (ALREADY_EXISTS)."""

    code = grpc.StatusCode.ALREADY_EXISTS


class PermissionDeniedError(SkewlessClientError):
    """The caller may not do this (PERMISSION_DENIED)."""

    code = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhaustedError(SkewlessClientError):
    """The request exceeds a limit named in `metadata` (RESOURCE_EXHAUSTED)."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class FailedPreconditionError(SkewlessClientError):
    """The system is not ready for this, e.g. not applied or materialized (FAILED_PRECONDITION)."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class AbortedError(SkewlessClientError):
    """The operation was aborted, e.g. by a concurrent one (ABORTED)."""

    code = grpc.StatusCode.ABORTED


class OutOfRangeError(SkewlessClientError):
    """A value is past a valid range, e.g. a page beyond the end (OUT_OF_RANGE)."""

    code = grpc.StatusCode.OUT_OF_RANGE


class UnimplementedError(SkewlessClientError):
    """The server does not implement this RPC (UNIMPLEMENTED)."""

    code = grpc.StatusCode.UNIMPLEMENTED


class InternalError(SkewlessClientError):
    """The server failed; its log has the details (INTERNAL)."""

    code = grpc.StatusCode.INTERNAL


class UnavailableError(SkewlessClientError):
    """The server or a store is unreachable; retry after `retry_delay` (UNAVAILABLE)."""

    code = grpc.StatusCode.UNAVAILABLE


class DataLossError(SkewlessClientError):
    """Unrecoverable data loss or corruption (DATA_LOSS)."""

    code = grpc.StatusCode.DATA_LOSS


class UnauthenticatedError(SkewlessClientError):
    """The call carried no valid credentials (UNAUTHENTICATED)."""

    code = grpc.StatusCode.UNAUTHENTICATED


_BY_CODE: dict[grpc.StatusCode, type[SkewlessClientError]] = {
    cls.code: cls
    for cls in (
        CancelledError,
        UnknownError,
        InvalidArgumentError,
        DeadlineExceededError,
        NotFoundError,
        AlreadyExistsError,
        PermissionDeniedError,
        ResourceExhaustedError,
        FailedPreconditionError,
        AbortedError,
        OutOfRangeError,
        UnimplementedError,
        InternalError,
        UnavailableError,
        DataLossError,
        UnauthenticatedError,
    )
    if cls.code is not None
}


def from_rpc_error(error: grpc.RpcError) -> SkewlessClientError:
    """Converts a failed call into the typed exception of its status code.

    Args:
        error: The `grpc.RpcError` raised by a stub (it is also a `grpc.Call`).

    Returns:
        The typed exception, with the status details parsed.

    """
    code: grpc.StatusCode = error.code()
    message: str = error.details() or ""
    details: list[any_pb2.Any] = []
    try:
        status = rpc_status.from_call(cast(grpc.Call, error))  # an RpcError from a stub is a Call
    except ValueError:  # the rich status disagrees with the plain one; keep the plain one
        status = None
    if status is not None:
        message = status.message or message
        details = list(status.details)
    cls = _BY_CODE.get(code, SkewlessClientError)
    return cls(message, code=code, details=details)
