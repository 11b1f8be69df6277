"""A real S3-compatible server for tests: SeaweedFS's `weed server` on loopback.

`make setup` (its `tools-s3` target) builds the pinned `weed` into `.tools/bin` once;
`$SKEWLESS_WEED` names another binary. `running_s3_server` starts one process that runs
SeaweedFS's master, volume server, filer and S3 gateway, each on a free port of 127.0.0.1,
with its data, configuration and log in a folder of the caller's. It waits until a bucket
exists and an object written to it reads back, and stops the process (by its PID) on exit.

The S3 gateway checks credentials (one identity, `ACCESS_KEY` / `SECRET_KEY`) and honours
conditional writes (`If-None-Match: *`), which `deltalake` uses to commit safely from
several writers at once (`conditional_put=etag`, no locking service).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.fs as pafs

__all__ = [
    "ACCESS_KEY",
    "REGION",
    "SECRET_KEY",
    "WEED",
    "S3Server",
    "S3ServerError",
    "find_weed",
    "running_s3_server",
]

ROOT = Path(__file__).resolve().parents[2]
WEED = ROOT / ".tools" / "bin" / "weed"
_WEED_ENV = "SKEWLESS_WEED"

ACCESS_KEY = "skewless-test"
SECRET_KEY = "skewless-test-secret"
REGION = "us-east-1"

# Unix socket paths must stay under the kernel's limit (108 bytes with the terminator).
_MAX_SOCKET_PATH = 100
# A graceful stop waits ~15 s on the filer's metadata flush; test data is thrown away.
_STOP_GRACE_S = 1.5


class S3ServerError(RuntimeError):
    """`weed` is missing, or did not become ready; the message says what to do or shows its log."""


def find_weed() -> Path:
    """Returns the `weed` binary to run: `$SKEWLESS_WEED`, else `.tools/bin/weed`.

    Raises:
        S3ServerError: It is not there; the message says to run `make setup`.

    """
    explicit = os.environ.get(_WEED_ENV)
    path = Path(explicit) if explicit else WEED
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise S3ServerError(
            f"SeaweedFS's weed binary is missing at {path}: run `make setup` "
            f"(or `make tools-s3`; it builds weed once, several minutes), or set ${_WEED_ENV}"
        )
    return path


@dataclass(frozen=True)
class S3Server:
    """A running S3-compatible endpoint with one bucket, and how to reach it."""

    endpoint_url: str
    bucket: str
    pid: int
    log_path: Path
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY
    region: str = REGION
    ports: dict[str, int] = field(default_factory=dict)

    @property
    def address(self) -> str:
        """`host:port` of the S3 gateway (what pyarrow calls `endpoint_override`)."""
        return self.endpoint_url.removeprefix("http://")

    def uri(self, *parts: str) -> str:
        """Returns `s3://<bucket>/<parts...>`."""
        return "/".join([f"s3://{self.bucket}", *(p.strip("/") for p in parts)])

    @property
    def storage_options(self) -> dict[str, str]:
        """`deltalake` storage options for this server (a new dict on each call)."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ALLOW_HTTP": "true",
            "AWS_REGION": self.region,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "conditional_put": "etag",
        }

    @property
    def env(self) -> dict[str, str]:
        """The standard AWS environment variables that point a child process at this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ALLOW_HTTP": "true",
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
        }

    def filesystem(self, **kwargs: object) -> pafs.S3FileSystem:
        """A pyarrow `S3FileSystem` on this server; `kwargs` override its defaults."""
        options: dict[str, object] = {
            "access_key": self.access_key,
            "secret_key": self.secret_key,
            "region": self.region,
            "scheme": "http",
            "endpoint_override": self.address,
            "connect_timeout": 2,
            "request_timeout": 10,
        }
        options.update(kwargs)
        return pafs.S3FileSystem(**options)


def _free_ports(count: int) -> list[int]:
    """Returns `count` distinct TCP ports free on 127.0.0.1 right now."""
    with ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind(("127.0.0.1", 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


def _tail(log: Path, chars: int = 3000) -> str:
    try:
        return log.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


class _Weed:
    """One `weed server` child process (master, volume, filer and S3 on free ports)."""

    _SERVICES = ("master", "volume", "filer", "s3")

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        ports = _free_ports(2 * len(self._SERVICES))
        self.http = dict(zip(self._SERVICES, ports[: len(self._SERVICES)], strict=True))
        self.grpc = dict(zip(self._SERVICES, ports[len(self._SERVICES) :], strict=True))
        self.log = data_dir / "weed.log"
        self.process: subprocess.Popen[bytes] | None = None
        # weed puts each service's gRPC socket in /tmp (not configurable); the filer's and
        # the S3 gateway's local sockets go in data_dir when the path is short enough.
        self.sockets = [Path(f"/tmp/seaweedfs-{s}-grpc-{self.grpc[s]}.sock") for s in self.grpc]
        self.local_socket: dict[str, Path] = {}
        for service in ("filer", "s3"):
            path = data_dir / f"{service}.sock"
            if len(str(path)) > _MAX_SOCKET_PATH:
                path = Path(f"/tmp/seaweedfs-{service}-{self.http[service]}.sock")
            self.local_socket[service] = path
            self.sockets.append(path)

    def start(self) -> None:
        (self.data_dir / "data").mkdir(parents=True, exist_ok=True)
        config_dir = self.data_dir / "config"  # empty: no stray filer.toml etc. is read
        config_dir.mkdir(exist_ok=True)
        identities = {
            "identities": [
                {
                    "name": "skewless-test",
                    "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        s3_config = self.data_dir / "s3.json"
        s3_config.write_text(json.dumps(identities))
        args = [
            str(find_weed()),
            "-logtostderr",
            f"-config_dir={config_dir}",
            "server",
            f"-dir={self.data_dir / 'data'}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-master.telemetry=false",
            "-master.volumeSizeLimitMB=64",
            "-volume.max=100",
            "-volume.preStopSeconds=0",
            "-s3",
            f"-s3.config={s3_config}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-filer.localSocket={self.local_socket['filer']}",
            f"-s3.localSocket={self.local_socket['s3']}",
        ]
        for service in self._SERVICES:
            args += [f"-{service}.port={self.http[service]}"]
            args += [f"-{service}.port.grpc={self.grpc[service]}"]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                args,
                cwd=self.data_dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def exited(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=_STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait()
        for path in self.sockets:  # left behind when it was killed
            path.unlink(missing_ok=True)


def _wait_ready(weed: _Weed, server: S3Server, timeout: float) -> None:
    """Waits until the bucket exists and an object written to it reads back."""
    fs = server.filesystem(allow_bucket_creation=True, connect_timeout=1, request_timeout=3)
    probe = f"{server.bucket}/.ready-probe"
    deadline = time.monotonic() + timeout
    last_error = "no attempt"
    while True:
        code = weed.exited()
        if code is not None:
            raise S3ServerError(
                f"weed server exited with code {code} before it was ready; "
                f"end of {weed.log}:\n{_tail(weed.log)}"
            )
        try:
            fs.create_dir(server.bucket)
            with fs.open_output_stream(probe) as out:
                out.write(b"ready")
            with fs.open_input_stream(probe) as inp:
                if inp.read() == b"ready":
                    fs.delete_file(probe)
                    return
            last_error = "the probe object read back different bytes"
        except OSError as exc:
            last_error = str(exc)
        if time.monotonic() > deadline:
            raise S3ServerError(
                f"weed server (S3 on {server.endpoint_url}) was not ready within {timeout:.0f}s "
                f"(last error: {last_error}); end of {weed.log}:\n{_tail(weed.log)}"
            )
        time.sleep(0.2)


@contextmanager
def running_s3_server(
    data_dir: Path, *, bucket: str = "skewless", timeout: float = 60.0
) -> Iterator[S3Server]:
    """Runs `weed server` with its data in `data_dir` and one bucket, until the block exits.

    Args:
        data_dir: Folder for the server's data, configuration and log (created if missing).
        bucket: Name of the bucket to create.
        timeout: Seconds to wait for the server to become ready.

    Yields:
        How to reach the server: endpoint, bucket, credentials, storage options.

    Raises:
        S3ServerError: `weed` is missing (run `make setup`), exited, or was not ready in time.

    """
    data_dir.mkdir(parents=True, exist_ok=True)
    weed = _Weed(data_dir)
    try:
        weed.start()
        assert weed.process is not None
        server = S3Server(
            endpoint_url=f"http://127.0.0.1:{weed.http['s3']}",
            bucket=bucket,
            pid=weed.process.pid,
            log_path=weed.log,
            ports={**weed.http, **{f"{s}.grpc": p for s, p in weed.grpc.items()}},
        )
        _wait_ready(weed, server, timeout)
        yield server
    finally:
        weed.stop()
