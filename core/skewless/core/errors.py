"""Exceptions raised by the offline engine and the registry.

Every exception skewless raises derives from `SkewlessError`; the server maps each
subclass to one gRPC status code at a single boundary.
"""

from __future__ import annotations

__all__ = [
    "DefinitionError",
    "FailedPreconditionError",
    "InvalidArgumentError",
    "NotFoundError",
    "PermissionDeniedError",
    "ResourceExhaustedError",
    "SkewlessError",
    "StoreUnavailableError",
]


class SkewlessError(Exception):
    """Root of all skewless errors.

    Attributes:
        message: What went wrong and what to do, in English.
        reason: A stable UPPER_SNAKE_CASE identifier for the error kind.
        metadata: The dynamic values the message mentions, keyed by name.

    """

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

    reason = "INVALID_DEFINITION"


class InvalidArgumentError(SkewlessError):
    """A request is malformed; `field` names the offending request field."""

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

    reason = "NOT_FOUND"


class PermissionDeniedError(SkewlessError):
    """The request asks for something the server is configured not to allow."""

    reason = "PERMISSION_DENIED"


class FailedPreconditionError(SkewlessError):
    """The system is not in a state that allows the operation (e.g. not materialized)."""

    reason = "FAILED_PRECONDITION"


class ResourceExhaustedError(SkewlessError):
    """A request exceeds a documented limit."""

    reason = "RESOURCE_EXHAUSTED"


class StoreUnavailableError(SkewlessError):
    """A store (Redis, files) cannot be reached; the operation may be retried."""

    reason = "STORE_UNAVAILABLE"
