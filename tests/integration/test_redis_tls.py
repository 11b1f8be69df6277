"""An external Redis over TLS with an ACL user: materialization, serving and pushes.

One real `redis-server` per test listens on a TLS port that requires client
certificates and on a plain loopback port; the default user is off and skewless
connects as an ACL user restricted to the project's keys, with a password that needs
percent-encoding in the URL. Certificates are generated for the run.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote

import grpc
import pyarrow as pa
import pytest
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc

from skewless.client import Client, UnavailableError
from skewless.core.config import RedisTLS, RepoConfig
from skewless.core.errors import StoreUnavailableError
from skewless.materialization.pipeline import materialize
from skewless.online.embedded_redis import find_redis_server, free_port
from skewless.registry.registry_store import RegistryStore
from tests.helpers.processes import stop_process

from .certs import TLSFiles, make_tls_files
from .matfixtures import T0, driver_rows, make_config, make_registry, write_source
from .served import ServerThread

USER = "feature_server"
PASSWORD = "s3cr:t/p@ss"  # percent-encoded in URLs
DAY = timedelta(days=1)


@dataclass(frozen=True)
class SecureRedis:
    """A running TLS + ACL redis-server."""

    tls_port: int
    plain_port: int
    certs: TLSFiles

    def url(self, *, tls: bool = True, password: str = PASSWORD) -> str:
        scheme, port = ("rediss", self.tls_port) if tls else ("redis", self.plain_port)
        return f"{scheme}://{USER}:{quote(password, safe='')}@127.0.0.1:{port}/0"

    @property
    def tls(self) -> RedisTLS:
        """The client side of online_store.tls: CA, client certificate and key."""
        return RedisTLS(
            ca_file=self.certs.ca, cert_file=self.certs.client_cert, key_file=self.certs.client_key
        )


@pytest.fixture
def secure_redis(tmp_path: Path) -> Iterator[SecureRedis]:
    certs = make_tls_files(tmp_path / "redis-certs")
    server = SecureRedis(tls_port=free_port(), plain_port=free_port(), certs=certs)
    data = tmp_path / "redis-data"
    data.mkdir()
    args = [
        find_redis_server(),
        "--bind", "127.0.0.1",
        "--port", str(server.plain_port),
        "--tls-port", str(server.tls_port),
        "--tls-cert-file", str(certs.server_cert),
        "--tls-key-file", str(certs.server_key),
        "--tls-ca-cert-file", str(certs.ca),
        "--tls-auth-clients", "yes",
        "--dir", str(data),
        "--save", "",
        "--appendonly", "no",
        # No anonymous access; the ACL user may touch its project's keys only.
        "--user", "default", "off",
        "--user", USER, "on", f">{PASSWORD}", "~mat:*", "resetchannels",
        "+@read", "+@write", "+@scripting", "+@transaction", "+@connection", "-@dangerous",
    ]  # fmt: skip
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    probe = redis.Redis(port=server.plain_port, username=USER, password=PASSWORD)
    deadline = time.monotonic() + 15
    try:
        while True:
            if proc.poll() is not None:
                err = proc.stderr.read().decode() if proc.stderr else ""
                raise RuntimeError(f"redis-server exited: {err}")
            try:
                if probe.ping():
                    break
            except redis.RedisError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield server
    finally:
        probe.close()
        stop_process(proc)


def _repo(tmp_path: Path, url: str, tls: RedisTLS | None) -> RepoConfig:
    config = replace(make_config(tmp_path / "repo", url), redis_tls=tls, metrics_port=0)
    write_source(config, driver_rows())
    RegistryStore(config.storage).save(make_registry(push=True))
    return config


def _conv_rate(target: str, view: str, driver: int) -> tuple[object, str]:
    with Client(target, timeout=5) as client:
        result = client.get_online_features({"driver_id": [driver]}, features=[f"{view}:conv_rate"])
    column = result.features[0]
    return column.values[0], column.statuses[0]


def test_the_redis_server_is_locked_down(secure_redis: SecureRedis) -> None:
    """What makes the other tests meaningful: no access without TLS, client cert and ACL."""
    plain = redis.Redis(port=secure_redis.plain_port)
    with pytest.raises(redis.AuthenticationError):
        plain.ping()
    plain.close()
    wrong = redis.Redis.from_url(secure_redis.url(tls=False, password="wrong"))
    with pytest.raises(redis.AuthenticationError):
        wrong.ping()
    wrong.close()
    no_client_cert = redis.Redis.from_url(
        secure_redis.url(), ssl_ca_certs=str(secure_redis.certs.ca)
    )
    with pytest.raises(redis.ConnectionError):
        no_client_cert.ping()
    no_client_cert.close()


def test_materialize_serve_and_push_over_tls_as_an_acl_user(
    tmp_path: Path, secure_redis: SecureRedis
) -> None:
    config = _repo(tmp_path, secure_redis.url(), secure_redis.tls)
    result = materialize(config, make_registry(push=True), T0, T0 + DAY)
    assert result.views[0].online_rows_written == 20
    server = ServerThread(config).start()
    try:
        target = f"127.0.0.1:{server.port}"
        assert _conv_rate(target, "driver_stats", 7) == (7 * 1000 + 23.0, "PRESENT")
        pushed = pa.table(
            {
                "driver_id": pa.array([7], pa.int64()),
                "ts": pa.array([T0 + 2 * DAY], pa.timestamp("us", tz="UTC")),
                "conv_rate": pa.array([0.625]),
                "trips": pa.array([3], pa.int32()),
                "label": pa.array(["pushed"]),
            }
        )
        with Client(target, timeout=5) as client:
            response = client.push_features(pushed, push_source="driver_push")
        assert response.online_rows_written == 1
        assert _conv_rate(target, "driver_live", 7) == (0.625, "PRESENT")
    finally:
        server.stop()


def test_plain_port_authenticates_the_acl_user_on_the_pipelined_read_path(
    tmp_path: Path, secure_redis: SecureRedis
) -> None:
    config = _repo(tmp_path, secure_redis.url(tls=False), None)
    materialize(config, make_registry(push=True), T0, T0 + DAY)
    server = ServerThread(config).start()
    try:
        assert server.server is not None
        assert server.server.online.reader.resp is not None  # hiredis pipeline, not redis-py
        target = f"127.0.0.1:{server.port}"
        assert _conv_rate(target, "driver_stats", 3) == (3 * 1000 + 23.0, "PRESENT")
    finally:
        server.stop()


def test_wrong_credentials_are_unavailable_not_internal(
    tmp_path: Path, secure_redis: SecureRedis
) -> None:
    url = secure_redis.url(tls=False, password="not-the-password")
    config = _repo(tmp_path, url, None)
    server = ServerThread(config).start()
    try:
        target = f"127.0.0.1:{server.port}"
        with pytest.raises(UnavailableError):
            _conv_rate(target, "driver_stats", 3)
        with grpc.insecure_channel(target) as channel:
            health = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=5
            )
        assert health.status == health_pb2.HealthCheckResponse.NOT_SERVING
    finally:
        server.stop()
    # The TLS port without the client certificate it requires: the job fails as unavailable.
    config = replace(
        config, redis_url=secure_redis.url(), redis_tls=RedisTLS(secure_redis.certs.ca)
    )
    with pytest.raises(StoreUnavailableError):
        materialize(config, make_registry(push=True), T0, T0 + DAY)
