"""The one boundary where domain exceptions become gRPC statuses.

Servicers raise `skewless.core.errors` exceptions; `grpc_errors` turns each into a
canonical status code, an actionable message and `google.rpc` details (`ErrorInfo`
always, `BadRequest` for bad input, `RetryInfo` when the call may be retried).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from skewless.core.errors import (
    DefinitionError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    ResourceExhaustedError,
    SkewlessError,
    StoreUnavailableError,
)

__all__ = ["ERROR_DOMAIN", "grpc_errors", "grpc_stream_errors", "to_status"]

ERROR_DOMAIN = "skewless.dev"
_log = logging.getLogger(__name__)

_CODES: list[tuple[type[SkewlessError], int]] = [
    (InvalidArgumentError, code_pb2.INVALID_ARGUMENT),
    (DefinitionError, code_pb2.FAILED_PRECONDITION),
    (NotFoundError, code_pb2.NOT_FOUND),
    (PermissionDeniedError, code_pb2.PERMISSION_DENIED),
    (FailedPreconditionError, code_pb2.FAILED_PRECONDITION),
    (ResourceExhaustedError, code_pb2.RESOURCE_EXHAUSTED),
    (StoreUnavailableError, code_pb2.UNAVAILABLE),
]


def _pack(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def to_status(exc: BaseException) -> status_pb2.Status:
    """Builds the `google.rpc.Status` sent for an exception."""
    if not isinstance(exc, SkewlessError):
        _log.exception("internal error", exc_info=exc)
        return status_pb2.Status(
            code=code_pb2.INTERNAL,
            message="internal error; the server log has the details",
            details=[_pack(error_details_pb2.ErrorInfo(reason="INTERNAL", domain=ERROR_DOMAIN))],
        )
    code = next((c for cls, c in _CODES if isinstance(exc, cls)), code_pb2.INTERNAL)
    details = [
        _pack(
            error_details_pb2.ErrorInfo(
                reason=exc.reason, domain=ERROR_DOMAIN, metadata=exc.metadata
            )
        )
    ]
    if isinstance(exc, InvalidArgumentError) and exc.field:
        details.append(
            _pack(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(
                            field=exc.field, description=exc.message
                        )
                    ]
                )
            )
        )
    if isinstance(exc, StoreUnavailableError):
        details.append(
            _pack(error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(nanos=200_000_000)))
        )
    return status_pb2.Status(code=code, message=exc.message, details=details)


Req = TypeVar("Req")
Resp = TypeVar("Resp")
Self = TypeVar("Self")


def grpc_errors(
    method: Callable[[Self, Req, grpc.aio.ServicerContext[Req, Resp]], Awaitable[Resp]],
) -> Callable[[Self, Req, grpc.aio.ServicerContext[Req, Resp]], Awaitable[Resp]]:
    """Wraps a unary servicer method so that exceptions end the call with a rich status."""

    @functools.wraps(method)
    async def wrapper(
        self: Self, request: Req, context: grpc.aio.ServicerContext[Req, Resp]
    ) -> Resp:
        try:
            return await method(self, request, context)
        except (grpc.aio.AbortError, grpc.aio.UsageError):
            raise
        except Exception as exc:
            await context.abort_with_status(rpc_status.to_status(to_status(exc)))
            raise AssertionError("unreachable") from exc  # abort always raises

    return wrapper


def grpc_stream_errors(
    method: Callable[[Self, Req, grpc.aio.ServicerContext[Any, Resp]], AsyncIterator[Resp]],
) -> Callable[[Self, Req, grpc.aio.ServicerContext[Any, Resp]], AsyncIterator[Resp]]:
    """Wraps a server-streaming servicer method like `grpc_errors`."""
    # Any: for a bidi method `Req` is the request stream, not the context's message type.

    @functools.wraps(method)
    async def wrapper(
        self: Self, request: Req, context: grpc.aio.ServicerContext[Any, Resp]
    ) -> AsyncIterator[Resp]:
        try:
            async for item in method(self, request, context):
                yield item
        except (grpc.aio.AbortError, grpc.aio.UsageError):
            raise
        except Exception as exc:
            await context.abort_with_status(rpc_status.to_status(to_status(exc)))

    return wrapper
