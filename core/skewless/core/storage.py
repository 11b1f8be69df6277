"""The data dir as storage: a local folder or an `s3://bucket/prefix` on object storage.

Everything skewless keeps in its data dir (registry, offline Delta tables, job records,
watermarks, feature logs) goes through a `DataStorage`, addressed by keys relative to the
data dir (`registry.pb`, `offline/driver_stats/...`). Two implementations:

* `LocalStorage`: a folder. `write_bytes` writes a temporary file, fsyncs it and renames
  it over the old one (readers see the old or the new bytes); `create` links a written
  temporary file to its name, which fails when the name exists.
* `S3Storage`: a bucket and prefix, through pyarrow's `S3FileSystem`. A PUT replaces an
  object atomically, so `write_bytes` is one PUT; `create` is a conditional PUT
  (`If-None-Match: *`, through `obstore`, since pyarrow's client cannot send it): of
  two writers creating one key, exactly one succeeds.

S3 failures become statuses a person can act on: an unreachable endpoint is UNAVAILABLE
(`OBJECT_STORE_UNAVAILABLE`), refused credentials or a missing bucket FAILED_PRECONDITION
(`OBJECT_STORE_ACCESS_DENIED`, `OBJECT_STORE_BUCKET_NOT_FOUND`). Messages name the bucket,
never the endpoint's credentials.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Protocol
from urllib.parse import urlparse

import pyarrow.fs as pafs

from skewless.core.errors import FailedPreconditionError, StoreUnavailableError

__all__ = [
    "DataStorage",
    "LocalStorage",
    "ObjectStoreSettings",
    "S3Location",
    "S3Storage",
    "StoredFile",
    "is_object_store_url",
    "object_store_error",
    "open_storage",
    "parse_s3_url",
]

_LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}


def is_object_store_url(value: str) -> bool:
    """Whether a data dir setting names object storage (`s3://...`)."""
    return value.startswith("s3://")


@dataclass(frozen=True)
class S3Location:
    """A bucket and a key prefix (without leading or trailing slashes)."""

    bucket: str
    prefix: str

    @property
    def url(self) -> str:
        """`s3://bucket/prefix`."""
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")


_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def parse_s3_url(url: str) -> S3Location:
    """Splits `s3://bucket/prefix`.

    Raises:
        ValueError: Not an s3:// URL with a valid bucket name.

    """
    parsed = urlparse(url)
    if parsed.scheme != "s3" or not _BUCKET.match(parsed.netloc or ""):
        raise ValueError("expected s3://BUCKET/PREFIX with a valid bucket name")
    prefix = "/".join(p for p in parsed.path.split("/") if p)
    if any(p in (".", "..") for p in prefix.split("/")):
        raise ValueError("the prefix may not hold '.' or '..' parts")
    return S3Location(bucket=parsed.netloc, prefix=prefix)


@dataclass(frozen=True)
class ObjectStoreSettings:
    """How to reach the object store (`object_store` in skewless.yaml, else AWS_* variables).

    Attributes:
        endpoint_url: The S3 endpoint (`http(s)://host:port`); None uses AWS's.
        region: The bucket's region.
        access_key_id: The access key; None leaves it to the AWS default chain.
        secret_access_key: Its secret (never shown in messages or logs).
        session_token: A session token for temporary credentials.
        allow_http: Allow a plain-http endpoint (always allowed on loopback).

    """

    endpoint_url: str | None = None
    region: str = "us-east-1"
    access_key_id: str | None = None
    secret_access_key: str | None = None
    session_token: str | None = None
    allow_http: bool = False

    def __repr__(self) -> str:  # the secrets stay out of logs and tracebacks
        return (
            f"ObjectStoreSettings(endpoint_url={self.endpoint_url!r}, region={self.region!r}, "
            f"allow_http={self.allow_http})"
        )

    @property
    def http(self) -> bool:
        """Whether the endpoint is plain http."""
        return bool(self.endpoint_url and self.endpoint_url.startswith("http://"))

    @property
    def loopback(self) -> bool:
        """Whether the endpoint is on this machine."""
        host = urlparse(self.endpoint_url or "").hostname or ""
        return host in _LOOPBACK

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> ObjectStoreSettings:
        """Settings from the standard AWS environment variables."""
        env = os.environ if environ is None else environ
        return cls(
            endpoint_url=env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or None,
            region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1",
            access_key_id=env.get("AWS_ACCESS_KEY_ID") or None,
            secret_access_key=env.get("AWS_SECRET_ACCESS_KEY") or None,
            session_token=env.get("AWS_SESSION_TOKEN") or None,
            allow_http=env.get("AWS_ALLOW_HTTP", "").lower() in ("1", "true", "yes"),
        )


@dataclass(frozen=True)
class StoredFile:
    """One object (or file) of the data dir.

    Attributes:
        key: Its key relative to the data dir (POSIX separators).
        size: Bytes.
        mtime: Last modification, seconds since the epoch (0 when unknown).

    """

    key: str
    size: int
    mtime: float = 0.0


class DataStorage(Protocol):
    """What skewless needs from the data dir: keys relative to it, atomic writes."""

    @property
    def url(self) -> str:
        """The data dir as configured (a folder path or `s3://bucket/prefix`)."""
        ...

    @property
    def is_local(self) -> bool:
        """Whether the data dir is a local folder (renames and `flock` work)."""
        ...

    @property
    def filesystem(self) -> pafs.FileSystem:
        """A pyarrow filesystem; `fs_path` gives its path of a key."""
        ...

    @property
    def storage_options(self) -> dict[str, str] | None:
        """`deltalake` storage options (None for a local folder)."""
        ...

    def fs_path(self, key: str) -> str:
        """The `filesystem` path of a key."""
        ...

    def uri(self, key: str) -> str:
        """The URI of a key for `deltalake` (a local path, or `s3://bucket/...`)."""
        ...

    def local_path(self, key: str) -> Path:
        """The local path of a key (local storage only)."""
        ...

    def read_bytes(self, key: str) -> bytes | None:
        """The object's bytes, or None when it does not exist."""
        ...

    def write_bytes(self, key: str, data: bytes) -> None:
        """Writes an object; readers see the old bytes or the new, never a part."""
        ...

    def create(self, key: str, data: bytes) -> bool:
        """Writes an object unless the key exists; False when it did (atomic)."""
        ...

    def exists(self, key: str) -> bool:
        """Whether the object exists."""
        ...

    def delete(self, key: str) -> None:
        """Deletes an object (no error when it is missing)."""
        ...

    def list_files(self, prefix: str, *, recursive: bool = False) -> list[StoredFile]:
        """The objects below a folder key, sorted by key ([] when none)."""
        ...

    def list_dirs(self, prefix: str) -> list[str]:
        """The names of the sub-folders directly below a folder key, sorted."""
        ...


# --- local folders -------------------------------------------------------------------------


class LocalStorage:
    """The data dir as a local folder."""

    def __init__(self, root: Path) -> None:
        """Binds to a folder (created on the first write)."""
        self.root = root
        self._fs = pafs.LocalFileSystem()

    @property
    def url(self) -> str:
        """The folder path."""
        return str(self.root)

    @property
    def is_local(self) -> bool:
        """True."""
        return True

    @property
    def filesystem(self) -> pafs.FileSystem:
        """Pyarrow's local filesystem."""
        return self._fs

    @property
    def storage_options(self) -> dict[str, str] | None:
        """None: deltalake needs none for a folder."""
        return None

    def local_path(self, key: str) -> Path:
        """`<root>/<key>`."""
        return self.root / key if key else self.root

    def fs_path(self, key: str) -> str:
        """The absolute path of a key."""
        return str(self.local_path(key))

    def uri(self, key: str) -> str:
        """The absolute path of a key."""
        return str(self.local_path(key))

    def read_bytes(self, key: str) -> bytes | None:
        """The file's bytes, or None."""
        try:
            return self.local_path(key).read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None

    def _written_tmp(self, path: Path, data: bytes) -> str:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return tmp

    def write_bytes(self, key: str, data: bytes) -> None:
        """Writes a temporary file, fsyncs it and renames it over the key."""
        path = self.local_path(key)
        tmp = self._written_tmp(path, data)
        try:
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def create(self, key: str, data: bytes) -> bool:
        """Links a written temporary file to the key; False when the key exists."""
        path = self.local_path(key)
        tmp = self._written_tmp(path, data)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        finally:
            Path(tmp).unlink(missing_ok=True)
        return True

    def exists(self, key: str) -> bool:
        """Whether the file exists."""
        return self.local_path(key).exists()

    def delete(self, key: str) -> None:
        """Removes the file."""
        self.local_path(key).unlink(missing_ok=True)

    def list_files(self, prefix: str, *, recursive: bool = False) -> list[StoredFile]:
        """The files below a folder."""
        folder = self.local_path(prefix)
        if not folder.is_dir():
            return []
        found = folder.rglob("*") if recursive else folder.iterdir()
        out = []
        for path in found:
            with contextlib.suppress(FileNotFoundError):
                if path.is_file():
                    st = path.stat()
                    key = path.relative_to(self.root).as_posix()
                    out.append(StoredFile(key=key, size=st.st_size, mtime=st.st_mtime))
        return sorted(out, key=lambda f: f.key)

    def list_dirs(self, prefix: str) -> list[str]:
        """The sub-folder names of a folder."""
        folder = self.local_path(prefix)
        if not folder.is_dir():
            return []
        return sorted(p.name for p in folder.iterdir() if p.is_dir())


# --- S3 ------------------------------------------------------------------------------------


def object_store_error(
    exc: BaseException, bucket: str
) -> FailedPreconditionError | StoreUnavailableError:
    """The status of an object-store failure: a short message, no endpoint credentials."""
    text = str(exc)
    lowered = text.lower()
    if any(
        s in lowered
        for s in ("nosuchbucket", "no_such_bucket", "bucket does not exist", "bucket not found")
    ):
        return FailedPreconditionError(
            f"the object store has no bucket {bucket!r}: create it, or fix data_dir in "
            "skewless.yaml",
            reason="OBJECT_STORE_BUCKET_NOT_FOUND",
            metadata={"bucket": bucket},
        )
    if any(
        s in lowered
        for s in (
            "access_denied",
            "accessdenied",
            "access denied",
            "invalidaccesskeyid",
            "signaturedoesnotmatch",
            "signature",
            "forbidden",
            "403",
            "credentials",
        )
    ):
        return FailedPreconditionError(
            f"the object store refused access to bucket {bucket!r}: check the credentials "
            "(object_store in skewless.yaml, or AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)",
            reason="OBJECT_STORE_ACCESS_DENIED",
            metadata={"bucket": bucket},
        )
    return StoreUnavailableError(
        f"the object store holding bucket {bucket!r} did not answer; check "
        "object_store.endpoint_url (or AWS_ENDPOINT_URL) and that the server is up, then retry",
        reason="OBJECT_STORE_UNAVAILABLE",
        metadata={"bucket": bucket},
    )


def _scrub(text: str, settings: ObjectStoreSettings) -> str:
    for secret in (settings.secret_access_key, settings.session_token):
        if secret:
            text = text.replace(secret, "***")
    return text


class S3Storage:
    """The data dir as a prefix of an S3 bucket."""

    def __init__(self, location: S3Location, settings: ObjectStoreSettings) -> None:
        """Binds to a bucket and prefix; no request is made until the first use."""
        self.location = location
        self.settings = settings
        endpoint = urlparse(settings.endpoint_url) if settings.endpoint_url else None
        options: dict[str, object] = {
            "region": settings.region,
            "connect_timeout": 2,
            "request_timeout": 20,
            "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=3),
        }
        if settings.access_key_id and settings.secret_access_key:
            options["access_key"] = settings.access_key_id
            options["secret_key"] = settings.secret_access_key
            if settings.session_token:
                options["session_token"] = settings.session_token
        if endpoint is not None:
            options["endpoint_override"] = endpoint.netloc
            options["scheme"] = endpoint.scheme or "https"
        self._fs = pafs.S3FileSystem(**options)
        self._obstore: object | None = None
        self._obstore_lock = threading.Lock()
        self._verified = False

    @property
    def url(self) -> str:
        """`s3://bucket/prefix`."""
        return self.location.url

    @property
    def is_local(self) -> bool:
        """False."""
        return False

    @property
    def filesystem(self) -> pafs.FileSystem:
        """Pyarrow's S3 filesystem on the endpoint."""
        return self._fs

    @property
    def storage_options(self) -> dict[str, str]:
        """`deltalake` options: endpoint, region, credentials, conditional-put commits."""
        s = self.settings
        options = {
            "AWS_REGION": s.region,
            "conditional_put": "etag",  # safe commits from several writers, no lock service
            "timeout": "30s",
            "connect_timeout": "2s",
        }
        if s.endpoint_url:
            options["AWS_ENDPOINT_URL"] = s.endpoint_url
        if s.http:
            options["AWS_ALLOW_HTTP"] = "true"
        if s.access_key_id and s.secret_access_key:
            options["AWS_ACCESS_KEY_ID"] = s.access_key_id
            options["AWS_SECRET_ACCESS_KEY"] = s.secret_access_key
            if s.session_token:
                options["AWS_SESSION_TOKEN"] = s.session_token
        return options

    def _key(self, key: str) -> str:
        return "/".join(p for p in (self.location.prefix, key.strip("/")) if p)

    def fs_path(self, key: str) -> str:
        """`bucket/prefix/key`."""
        return f"{self.location.bucket}/{self._key(key)}".rstrip("/")

    def uri(self, key: str) -> str:
        """`s3://bucket/prefix/key`."""
        return f"s3://{self.fs_path(key)}"

    def local_path(self, key: str) -> Path:
        """Not available: raises ValueError."""
        raise ValueError("the data dir is on object storage: it has no local paths")

    @contextlib.contextmanager
    def errors(self) -> Iterator[None]:
        """Turns an object-store failure into its status (see `object_store_error`)."""
        try:
            yield
        except (FileNotFoundError, FailedPreconditionError, StoreUnavailableError):
            raise
        except OSError as exc:
            raise object_store_error(
                OSError(_scrub(str(exc), self.settings)), self.location.bucket
            ) from None

    def read_bytes(self, key: str) -> bytes | None:
        """The object's bytes, or None."""
        self._verify()
        with self.errors():
            try:
                with self._fs.open_input_stream(self.fs_path(key)) as stream:
                    data: bytes = stream.read()
                    return data
            except FileNotFoundError:
                return None
            except OSError as exc:
                if "NoSuchKey" in str(exc) or "Path does not exist" in str(exc):
                    return None
                raise

    def write_bytes(self, key: str, data: bytes) -> None:
        """One PUT (S3 replaces an object atomically)."""
        self._verify()
        with self.errors(), self._fs.open_output_stream(self.fs_path(key)) as out:
            out.write(data)

    def _store(self) -> object:
        with self._obstore_lock:
            if self._obstore is None:
                from obstore.store import S3Store

                s = self.settings
                config: dict[str, str] = {"region": s.region, "conditional_put": "etag"}
                if s.endpoint_url:
                    config["endpoint"] = s.endpoint_url
                if s.access_key_id and s.secret_access_key:
                    config["access_key_id"] = s.access_key_id
                    config["secret_access_key"] = s.secret_access_key
                    if s.session_token:
                        config["token"] = s.session_token
                self._obstore = S3Store(
                    self.location.bucket,
                    config=config,  # type: ignore[arg-type]
                    client_options={
                        "allow_http": s.http,
                        "timeout": "20s",
                        "connect_timeout": "2s",
                    },
                    retry_config={
                        "max_retries": 2,
                        "retry_timeout": timedelta(seconds=10),
                        "backoff": {
                            "init_backoff": timedelta(milliseconds=100),
                            "max_backoff": timedelta(seconds=2),
                            "base": 2,
                        },
                    },
                )
            return self._obstore

    def create(self, key: str, data: bytes) -> bool:
        """A conditional PUT (`If-None-Match: *`); False when the object exists."""
        self._verify()
        import obstore
        from obstore.exceptions import AlreadyExistsError, BaseError, PreconditionError

        try:
            obstore.put(self._store(), self._key(key), data, mode="create")  # type: ignore[arg-type]
        except (AlreadyExistsError, PreconditionError):
            return False
        except BaseError as exc:
            raise object_store_error(
                OSError(_scrub(str(exc), self.settings)), self.location.bucket
            ) from None
        return True

    def exists(self, key: str) -> bool:
        """Whether the object exists."""
        self._verify()
        with self.errors():
            info = self._fs.get_file_info(self.fs_path(key))
        return bool(info.type == pafs.FileType.File)

    def delete(self, key: str) -> None:
        """Deletes the object."""
        self._verify()
        with self.errors(), contextlib.suppress(FileNotFoundError):
            self._fs.delete_file(self.fs_path(key))

    def list_files(self, prefix: str, *, recursive: bool = False) -> list[StoredFile]:
        """The objects below a key prefix (as a folder)."""
        self._verify()
        base = self.fs_path(prefix)
        root = self.fs_path("")
        with self.errors():
            infos = self._fs.get_file_info(
                pafs.FileSelector(base, recursive=recursive, allow_not_found=True)
            )
        out = [
            StoredFile(
                key=i.path[len(root) + 1 :] if root else i.path,
                size=int(i.size or 0),
                mtime=i.mtime.timestamp() if i.mtime is not None else 0.0,
            )
            for i in infos
            if i.type == pafs.FileType.File
        ]
        return sorted(out, key=lambda f: f.key)

    def list_dirs(self, prefix: str) -> list[str]:
        """The sub-prefixes directly below a key prefix."""
        self._verify()
        with self.errors():
            infos = self._fs.get_file_info(
                pafs.FileSelector(self.fs_path(prefix), recursive=False, allow_not_found=True)
            )
        return sorted(i.base_name for i in infos if i.type == pafs.FileType.Directory)

    def _verify(self) -> None:
        """Checks the bucket once per process before the first use (see `check`).

        Without it a missing bucket would read as an empty data dir (or, on some
        servers, be created by the first write).
        """
        if not self._verified:
            self.check()
            self._verified = True

    def check(self) -> None:
        """Makes one request, so that a bad endpoint, key or bucket shows at once.

        Raises:
            StoreUnavailableError: `OBJECT_STORE_UNAVAILABLE`.
            FailedPreconditionError: `OBJECT_STORE_ACCESS_DENIED` or
                `OBJECT_STORE_BUCKET_NOT_FOUND`.

        """
        with self.errors():
            info = self._fs.get_file_info(self.location.bucket)
        if info.type == pafs.FileType.NotFound:
            raise object_store_error(OSError("NoSuchBucket"), self.location.bucket)
        with self.errors():  # the credentials may see the bucket yet not read it
            self._fs.get_file_info(
                pafs.FileSelector(self.fs_path(""), recursive=False, allow_not_found=True)
            )


_opened: dict[tuple[str, ObjectStoreSettings], S3Storage] = {}
_opened_lock = threading.Lock()


def open_storage(
    data_dir: Path, url: str | None, settings: ObjectStoreSettings | None
) -> DataStorage:
    """The storage of a data dir: `url` (s3://) when set, else the local folder.

    One `S3Storage` per (url, settings) per process: its connections are reused.
    """
    if url is None:
        return LocalStorage(data_dir)
    key = (url, settings or ObjectStoreSettings())
    with _opened_lock:
        storage = _opened.get(key)
        if storage is None:
            storage = S3Storage(parse_s3_url(url), key[1])
            _opened[key] = storage
        return storage
