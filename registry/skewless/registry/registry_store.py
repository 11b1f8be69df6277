"""Reading and writing the versioned registry file.

The registry is one serialized `skewless.v1.Registry` message at
`<data_dir>/registry.pb`. A write goes to a temporary file in the same folder and is
renamed over the old one, so readers see either the old or the new version, never a
half-written file.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from google.protobuf import timestamp_pb2

from skewless.core.errors import DefinitionError, FailedPreconditionError
from skewless.v1 import registry_pb2

if TYPE_CHECKING:
    from skewless.registry.registry_diff import RegistryPlan

__all__ = ["ApplyResult", "RegistryStore", "registry_digest", "registry_not_applied"]


def registry_digest(registry: registry_pb2.Registry) -> str:
    """Returns the SHA-256 of a registry's definitions (ignoring version and time)."""
    body = registry_pb2.Registry()
    body.CopyFrom(registry)
    body.ClearField("version")
    body.ClearField("update_time")
    body.ClearField("digest")
    return hashlib.sha256(body.SerializeToString(deterministic=True)).hexdigest()


@dataclass(frozen=True)
class ApplyResult:
    """The outcome of writing definitions to the registry.

    Attributes:
        registry: The registry now stored.
        changed: False when the definitions equalled the stored ones (nothing written).
        plan: What the apply changed, object by object (set by `skewless.registry.apply`).

    """

    registry: registry_pb2.Registry
    changed: bool
    plan: RegistryPlan | None = None


def registry_not_applied() -> FailedPreconditionError:
    """The error of a call that needs a registry before anything was applied."""
    return FailedPreconditionError(
        "no registry has been applied yet: run `skewless apply` on the feature repository",
        reason="REGISTRY_NOT_APPLIED",
    )


class RegistryStore:
    """The registry file of one project."""

    def __init__(self, path: Path) -> None:
        """Binds the store to a file path (which need not exist yet)."""
        self.path = path

    def load(self) -> registry_pb2.Registry | None:
        """Returns the stored registry, or None if nothing was applied yet.

        Raises:
            DefinitionError: The file exists but cannot be parsed.

        """
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None
        registry = registry_pb2.Registry()
        try:
            registry.ParseFromString(data)
        except Exception as exc:  # protobuf raises DecodeError, a bare Exception subclass
            raise DefinitionError(
                "the registry file is corrupt; re-run `skewless apply`",
                reason="REGISTRY_CORRUPT",
            ) from exc
        return registry

    def require(self) -> registry_pb2.Registry:
        """Returns the stored registry.

        Raises:
            FailedPreconditionError: Nothing was applied yet.
            DefinitionError: The file exists but cannot be parsed.

        """
        registry = self.load()
        if registry is None:
            raise registry_not_applied()
        return registry

    def stat_key(self) -> tuple[int, int] | None:
        """Returns a cheap change marker (mtime_ns, size) of the file, or None if absent."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def save(self, definitions: registry_pb2.Registry) -> ApplyResult:
        """Stores definitions as the next version unless they equal the stored ones.

        Args:
            definitions: The registry to store; version, update time and digest are set here.

        Returns:
            The stored registry and whether anything changed.

        """
        digest = registry_digest(definitions)
        current = self.load()
        if current is not None and current.digest == digest:
            return ApplyResult(registry=current, changed=False)
        registry = registry_pb2.Registry()
        registry.CopyFrom(definitions)
        registry.version = (current.version if current is not None else 0) + 1
        registry.digest = digest
        now = timestamp_pb2.Timestamp()
        now.GetCurrentTime()
        registry.update_time.CopyFrom(now)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".registry-", dir=self.path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(registry.SerializeToString(deterministic=True))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return ApplyResult(registry=registry, changed=True)
