"""Reading and writing the versioned registry.

The registry is one serialized `skewless.v1.Registry` message. In a local data dir it
is `<data_dir>/registry.pb`: a write goes to a temporary file in the same folder and is
renamed over the old one, so readers see either the old or the new version, never a
half-written file.

On object storage (no rename) every version is its own object,
`registry/<version, 12 digits>.pb`, written with a create-only (conditional) PUT:
of two applies racing for one version exactly one is stored, the other reads the
winner and takes the next number (or finds its definitions already stored). Readers
list `registry/` and read the greatest version; servers poll that listing.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from google.protobuf import timestamp_pb2

from skewless.core.errors import DefinitionError, FailedPreconditionError
from skewless.core.storage import DataStorage, LocalStorage
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


#: The registry's key in a local data dir.
REGISTRY_FILE = "registry.pb"
#: The folder of versioned registry objects on object storage.
REGISTRY_VERSIONS = "registry"
_CREATE_ATTEMPTS = 20


def _version_key(version: int) -> str:
    return f"{REGISTRY_VERSIONS}/{version:012d}.pb"


class RegistryStore:
    """The registry of one project, in its data dir."""

    def __init__(self, storage: DataStorage | Path) -> None:
        """Binds the store to a data dir's storage (or, locally, a registry file path)."""
        if isinstance(storage, Path):
            self.storage: DataStorage = LocalStorage(storage.parent)
            self._key = storage.name
        else:
            self.storage = storage
            self._key = REGISTRY_FILE
        self.versioned = not self.storage.is_local

    def _latest_key(self) -> tuple[str, int] | None:
        if not self.versioned:
            return None
        names = [f for f in self.storage.list_files(REGISTRY_VERSIONS) if f.key.endswith(".pb")]
        if not names:
            return None
        latest = names[-1]  # zero-padded: key order is version order
        return latest.key, latest.size

    def _parse(self, data: bytes) -> registry_pb2.Registry:
        registry = registry_pb2.Registry()
        try:
            registry.ParseFromString(data)
        except Exception as exc:  # protobuf raises DecodeError, a bare Exception subclass
            raise DefinitionError(
                "the registry file is corrupt; re-run `skewless apply`",
                reason="REGISTRY_CORRUPT",
            ) from exc
        return registry

    def load(self) -> registry_pb2.Registry | None:
        """Returns the stored registry, or None if nothing was applied yet.

        Raises:
            DefinitionError: The file exists but cannot be parsed.
            StoreUnavailableError: The object store did not answer.
            FailedPreconditionError: The object store refused the credentials or has
                no such bucket.

        """
        if self.versioned:
            latest = self._latest_key()
            if latest is None:
                return None
            data = self.storage.read_bytes(latest[0])
        else:
            data = self.storage.read_bytes(self._key)
        return None if data is None else self._parse(data)

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

    def stat_key(self) -> tuple[object, int] | None:
        """Returns a cheap change marker of the stored registry, or None if absent.

        Locally the file's (mtime_ns, size); on object storage the latest version's
        (key, size), from one listing.
        """
        if self.versioned:
            return self._latest_key()
        try:
            st = self.storage.local_path(self._key).stat()
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def _next(
        self, definitions: registry_pb2.Registry, digest: str, current: registry_pb2.Registry | None
    ) -> registry_pb2.Registry:
        registry = registry_pb2.Registry()
        registry.CopyFrom(definitions)
        registry.version = (current.version if current is not None else 0) + 1
        registry.digest = digest
        now = timestamp_pb2.Timestamp()
        now.GetCurrentTime()
        registry.update_time.CopyFrom(now)
        return registry

    def save(self, definitions: registry_pb2.Registry) -> ApplyResult:
        """Stores definitions as the next version unless they equal the stored ones.

        Args:
            definitions: The registry to store; version, update time and digest are set here.

        Returns:
            The stored registry and whether anything changed.

        Raises:
            FailedPreconditionError: `REGISTRY_WRITE_CONFLICT`: other applies kept
                taking the next version (object storage only); retry.

        """
        digest = registry_digest(definitions)
        for _ in range(_CREATE_ATTEMPTS):
            current = self.load()
            if current is not None and current.digest == digest:
                return ApplyResult(registry=current, changed=False)
            registry = self._next(definitions, digest, current)
            data = registry.SerializeToString(deterministic=True)
            if not self.versioned:
                self.storage.write_bytes(self._key, data)
                return ApplyResult(registry=registry, changed=True)
            if self.storage.create(_version_key(registry.version), data):
                return ApplyResult(registry=registry, changed=True)
            # Another apply stored this version first: read it and try the next one.
        raise FailedPreconditionError(
            "other applies kept writing the registry at the same time; retry the apply",
            reason="REGISTRY_WRITE_CONFLICT",
        )
