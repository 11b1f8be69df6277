"""Domain exceptions as gRPC statuses: code, an actionable message, `google.rpc` details.

`to_status` builds the `google.rpc.Status` of a failed call (the boundary in
`skewless.server.rpc` sends it): each `SkewlessError` subclass carries its code; the
status always holds an `ErrorInfo` (reason, domain `skewless.dev`, metadata), plus a
`BadRequest` naming the field for INVALID_ARGUMENT and a `RetryInfo` for UNAVAILABLE.
Anything else is INTERNAL, logged with its traceback, and answered without internal
text.

Nothing in a status repeats much of the request: every metadata value is capped to
`MAX_SHOWN` characters (with the full length), the message to `MAX_MESSAGE` and the
metadata to `MAX_METADATA_ENTRIES` entries, so that a status stays under a few KiB even
for a 1 MiB name and a default client can receive it.
"""

from __future__ import annotations

import logging
from typing import Any

from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from skewless.core.errors import MAX_SHOWN, InvalidArgumentError, SkewlessError, shown

__all__ = [
    "ERROR_DOMAIN",
    "MAX_MESSAGE",
    "MAX_METADATA_ENTRIES",
    "RETRY_DELAY_SECONDS",
    "code_name",
    "to_status",
]

ERROR_DOMAIN = "skewless.dev"
#: Longest message a status carries, in characters.
MAX_MESSAGE = 1024
#: Most `ErrorInfo.metadata` entries a status carries.
MAX_METADATA_ENTRIES = 16
#: The `RetryInfo.retry_delay` of UNAVAILABLE answers.
RETRY_DELAY_SECONDS = 0.2
_log = logging.getLogger(__name__)


def _pack(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def code_name(exc: BaseException | None) -> str:
    """The gRPC status code name a call ending with `exc` gets (`OK` for None)."""
    if exc is None:
        return "OK"
    if isinstance(exc, SkewlessError):
        return exc.code
    return "INTERNAL" if isinstance(exc, Exception) else "CANCELLED"


def to_status(exc: BaseException) -> status_pb2.Status:
    """Builds the `google.rpc.Status` sent for an exception."""
    if not isinstance(exc, SkewlessError):
        _log.error("internal error", exc_info=exc)
        return status_pb2.Status(
            code=code_pb2.INTERNAL,
            message="internal error; the server log has the details",
            details=[_pack(error_details_pb2.ErrorInfo(reason="INTERNAL", domain=ERROR_DOMAIN))],
        )
    message = shown(exc.message, MAX_MESSAGE)
    metadata = {
        shown(key, 64): shown(value, MAX_SHOWN)
        for key, value in list(exc.metadata.items())[:MAX_METADATA_ENTRIES]
    }
    details = [
        _pack(
            error_details_pb2.ErrorInfo(reason=exc.reason, domain=ERROR_DOMAIN, metadata=metadata)
        )
    ]
    if isinstance(exc, InvalidArgumentError) and exc.field:
        violation = error_details_pb2.BadRequest.FieldViolation(
            field=shown(exc.field, MAX_SHOWN), description=message
        )
        details.append(_pack(error_details_pb2.BadRequest(field_violations=[violation])))
    if exc.code == "UNAVAILABLE":
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(RETRY_DELAY_SECONDS * 1e9))
        details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
    return status_pb2.Status(code=code_pb2.Code.Value(exc.code), message=message, details=details)
