"""The exceptions of skewless, each with the gRPC status code it is answered with.

Every exception skewless raises on purpose derives from `SkewlessError`. A subclass
carries its status `code` (a `google.rpc.Code` name); an instance carries a `reason`
(UPPER_SNAKE_CASE, the `ErrorInfo.reason` on the wire: one reason always means one
error, so one code), an English `message` a person can act on, and `metadata`: the
dynamic values the message mentions, keyed by snake_case names (the field names of the
contract, e.g. `feature_view`). The server maps them at one boundary; the CLI prints
the message.

Messages echo at most a short prefix of what a caller sent: format names from a
request with `quoted` (the boundary caps metadata values with `shown` as well).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

__all__ = [
    "MAX_SHOWN",
    "CancelledError",
    "DefinitionError",
    "FailedPreconditionError",
    "InvalidArgumentError",
    "NotFoundError",
    "PermissionDeniedError",
    "ResourceExhaustedError",
    "SkewlessError",
    "StoreUnavailableError",
    "UnauthenticatedError",
    "listing",
    "quoted",
    "shown",
]

#: Most characters of one caller-supplied value that a message or metadata value repeats.
MAX_SHOWN = 128


def shown(value: object, limit: int = MAX_SHOWN) -> str:
    """Returns `str(value)`, cut to `limit` characters with an ellipsis and the full length.

    Example:
        >>> shown("x" * 1000, 4)
        'xxxx… (1000 characters)'

    """
    text = value if isinstance(value, str) else str(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text):,} characters)"


def quoted(value: object, limit: int = MAX_SHOWN) -> str:
    """Returns `repr(value)` of a string, cut like `shown` (for names in messages)."""
    text = value if isinstance(value, str) else str(value)
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}… ({len(text):,} characters)"


def listing(names: Iterable[str], *, limit: int = 10, empty: str = "none") -> str:
    """Returns up to `limit` names joined with commas, then how many more there are."""
    items = list(names)
    if not items:
        return empty
    head = ", ".join(shown(n, 64) for n in items[:limit])
    rest = len(items) - limit
    return head if rest <= 0 else f"{head} and {rest:,} more"


class SkewlessError(Exception):
    """Root of all skewless errors.

    Attributes:
        code: The `google.rpc.Code` name the error is answered with (class-level).
        message: What went wrong and what to do, in English.
        reason: A stable UPPER_SNAKE_CASE identifier for the error kind.
        metadata: The dynamic values the message mentions, keyed by name.

    """

    code: ClassVar[str] = "INTERNAL"
    reason = "INTERNAL"

    def __init__(
        self, message: str, *, reason: str | None = None, metadata: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason
        self.metadata = dict(metadata or {})


class DefinitionError(SkewlessError):
    """A feature definition or the project configuration is invalid."""

    code = "FAILED_PRECONDITION"
    reason = "INVALID_DEFINITION"


class InvalidArgumentError(SkewlessError):
    """A request is malformed; `field` names the offending request field."""

    code = "INVALID_ARGUMENT"
    reason = "INVALID_ARGUMENT"

    def __init__(
        self,
        message: str,
        *,
        field: str = "",
        reason: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message, reason=reason, metadata=metadata)
        self.field = field


class NotFoundError(SkewlessError):
    """A named feature, view, service, entity, source or job does not exist."""

    code = "NOT_FOUND"
    reason = "NOT_FOUND"


class PermissionDeniedError(SkewlessError):
    """The request asks for something the server is configured not to allow."""

    code = "PERMISSION_DENIED"
    reason = "PERMISSION_DENIED"


class UnauthenticatedError(SkewlessError):
    """The call carried no valid credentials."""

    code = "UNAUTHENTICATED"
    reason = "UNAUTHENTICATED"


class FailedPreconditionError(SkewlessError):
    """The system is not in a state that allows the operation (e.g. not materialized)."""

    code = "FAILED_PRECONDITION"
    reason = "FAILED_PRECONDITION"


class ResourceExhaustedError(SkewlessError):
    """A request exceeds a documented limit."""

    code = "RESOURCE_EXHAUSTED"
    reason = "RESOURCE_EXHAUSTED"


class StoreUnavailableError(SkewlessError):
    """A store (Redis, files) cannot be reached; the operation may be retried."""

    code = "UNAVAILABLE"
    reason = "STORE_UNAVAILABLE"


class CancelledError(SkewlessError):
    """The operation was cancelled before it finished (nothing half-done is kept)."""

    code = "CANCELLED"
    reason = "CANCELLED"
