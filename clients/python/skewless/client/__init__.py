"""skewless Python client: online lookups and historical retrieval over gRPC.

Example:
    >>> from skewless.client import Client
    >>> with Client("localhost:6566") as client:
    ...     features = client.get_online_features(
    ...         {"driver_id": [1001]}, features=["driver_stats:conv_rate"]
    ...     )

"""

from skewless.client._client import DEFAULT_TIMEOUT, RPC_METHODS, Client
from skewless.client.errors import (
    AbortedError,
    AlreadyExistsError,
    CancelledError,
    DataLossError,
    DeadlineExceededError,
    FailedPreconditionError,
    FieldViolation,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    OutOfRangeError,
    PermissionDeniedError,
    ResourceExhaustedError,
    SkewlessClientError,
    UnauthenticatedError,
    UnavailableError,
    UnimplementedError,
    UnknownError,
)
from skewless.client.feature_log import FeatureLog
from skewless.client.online import FeatureColumn, OnlineFeatures

__all__ = [
    "DEFAULT_TIMEOUT",
    "RPC_METHODS",
    "AbortedError",
    "AlreadyExistsError",
    "CancelledError",
    "Client",
    "DataLossError",
    "DeadlineExceededError",
    "FailedPreconditionError",
    "FeatureColumn",
    "FeatureLog",
    "FieldViolation",
    "InternalError",
    "InvalidArgumentError",
    "NotFoundError",
    "OnlineFeatures",
    "OutOfRangeError",
    "PermissionDeniedError",
    "ResourceExhaustedError",
    "SkewlessClientError",
    "UnauthenticatedError",
    "UnavailableError",
    "UnimplementedError",
    "UnknownError",
]
