"""TLS and mutual TLS on the gRPC port, certificate rotation, and the plaintext bind rule.

Every test runs the real server (in a thread, or `skewless serve` as a process) with
certificates generated for the run, and calls it through real grpc channels.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from skewless.client import Client, UnavailableError
from skewless.core.config import RepoConfig, ServerTLS
from skewless.registry.registry_store import RegistryStore
from tests.helpers.processes import stop_process

from . import client_harness as h
from .certs import TLSFiles, make_tls_files
from .served import ServerThread, serve, write_repo

_SERVING = health_pb2.HealthCheckResponse.SERVING


@pytest.fixture
def certs(tmp_path: Path) -> TLSFiles:
    return make_tls_files(tmp_path / "certs")


@contextmanager
def tls_server(root: Path, redis_url: str, tls: ServerTLS) -> Iterator[str]:
    """The real server in a thread on a TLS port, serving the contract registry."""
    data_dir = root / ".skewless"
    RegistryStore(data_dir / "registry.pb").save(h.build_registry())
    config = RepoConfig(
        root=root,
        project=h.PROJECT,
        data_dir=data_dir,
        redis_url=redis_url,
        server_port=0,
        metrics_port=0,
        server_tls=tls,
    )
    thread = ServerThread(config).start()
    try:
        yield f"127.0.0.1:{thread.port}"
    finally:
        thread.stop()


def _health(target: str, credentials: grpc.ChannelCredentials | None) -> object:
    """The health status over a new channel, or the status code of the failed call."""
    channel = (
        grpc.insecure_channel(target)
        if credentials is None
        else grpc.secure_channel(target, credentials)
    )
    with channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=5
            )
        except grpc.RpcError as exc:
            return exc.code()
        return response.status


def _trusting(files: TLSFiles, *, with_client_cert: bool = False) -> grpc.ChannelCredentials:
    if with_client_cert:
        return grpc.ssl_channel_credentials(
            files.read("ca"), files.read("client_key"), files.read("client_cert")
        )
    return grpc.ssl_channel_credentials(files.read("ca"))


def _registry_project(target: str, **kwargs: object) -> str:
    with Client(target, timeout=5, **kwargs) as client:  # type: ignore[arg-type]
        return client.get_registry_info().project


def test_tls_port_serves_the_api_and_health_and_refuses_plaintext(
    tmp_path: Path, redis_url: str, certs: TLSFiles
) -> None:
    other = make_tls_files(tmp_path / "other")
    tls = ServerTLS(cert_file=certs.server_cert, key_file=certs.server_key)
    with tls_server(tmp_path / "repo", redis_url, tls) as target:
        assert _registry_project(target, root_certificates=certs.read("ca")) == h.PROJECT
        assert _health(target, _trusting(certs)) == _SERVING
        # A plaintext client, and a client that does not trust the server's CA, get nothing.
        assert _health(target, None) == grpc.StatusCode.UNAVAILABLE
        assert _health(target, _trusting(other)) == grpc.StatusCode.UNAVAILABLE
        with pytest.raises(UnavailableError):
            _registry_project(target)


def test_mutual_tls_requires_a_client_certificate_from_the_client_ca(
    tmp_path: Path, redis_url: str, certs: TLSFiles
) -> None:
    other = make_tls_files(tmp_path / "other")
    tls = ServerTLS(cert_file=certs.server_cert, key_file=certs.server_key, client_ca_file=certs.ca)
    with tls_server(tmp_path / "repo", redis_url, tls) as target:
        client_cert = (certs.read("client_cert"), certs.read("client_key"))
        project = _registry_project(
            target, root_certificates=certs.read("ca"), client_cert=client_cert
        )
        assert project == h.PROJECT
        assert _health(target, _trusting(certs, with_client_cert=True)) == _SERVING
        # No certificate, or one from another CA: the handshake fails.
        assert _health(target, _trusting(certs)) == grpc.StatusCode.UNAVAILABLE
        with pytest.raises(UnavailableError):
            _registry_project(target, root_certificates=certs.read("ca"))
        foreign = (other.read("client_cert"), other.read("client_key"))
        with pytest.raises(UnavailableError):
            _registry_project(target, root_certificates=certs.read("ca"), client_cert=foreign)


def _replace(path: Path, data: bytes) -> None:
    """Rotates a file the way deployment tools do: write aside, then rename over it."""
    tmp = path.with_name(path.name + ".new")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def test_rotated_certificate_serves_new_connections_without_a_restart(
    tmp_path: Path, redis_url: str, certs: TLSFiles, caplog: pytest.LogCaptureFixture
) -> None:
    # The server reads its files from a folder of its own, rotated in place.
    live = tmp_path / "live"
    live.mkdir()
    cert, key = live / "server.pem", live / "server.key"
    shutil.copy(certs.server_cert, cert)
    shutil.copy(certs.server_key, key)
    rotated = make_tls_files(tmp_path / "rotated")
    with tls_server(
        tmp_path / "repo", redis_url, ServerTLS(cert_file=cert, key_file=key)
    ) as target:
        kept = grpc.secure_channel(target, _trusting(certs))
        stub = health_pb2_grpc.HealthStub(kept)
        assert stub.Check(health_pb2.HealthCheckRequest(), timeout=5).status == _SERVING

        # Half a rotation (new key, old certificate) is not usable: the old pair stays.
        with caplog.at_level(logging.WARNING, logger="skewless.server.tls"):
            _replace(key, rotated.read("server_key"))
            assert _health(target, _trusting(certs)) == _SERVING
        assert "keeping the previous TLS certificate" in caplog.text

        # The rotation completes: new connections get the new certificate.
        _replace(cert, rotated.read("server_cert"))
        assert _health(target, _trusting(rotated)) == _SERVING
        assert _health(target, _trusting(certs)) == grpc.StatusCode.UNAVAILABLE
        assert _registry_project(target, root_certificates=rotated.read("ca")) == h.PROJECT
        # A connection made before the rotation keeps working.
        assert stub.Check(health_pb2.HealthCheckRequest(), timeout=5).status == _SERVING
        kept.close()


# --- skewless serve: TLS from skewless.yaml, and the plaintext bind rule ------------------------


def _write_yaml(root: Path, redis_url: str | None, server: str) -> Path:
    write_repo(root, project="tlstest", redis_url=redis_url)
    config = root / "skewless.yaml"
    config.write_text(config.read_text() + server)
    return root


def _serve_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "skewless.cli", "serve", *args, "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_serve_reads_tls_and_mtls_files_relative_to_the_repository(
    tmp_path: Path, redis_url: str, certs: TLSFiles
) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(certs.ca.parent, repo / "tls")
    server = (
        "server:\n  tls:\n    cert_file: tls/server.pem\n    key_file: tls/server.key\n"
        "    client_ca_file: tls/ca.pem\n"
    )
    with serve(_write_yaml(repo, redis_url, server)) as served:
        assert "over mutual TLS" in served.output()
        mtls = _trusting(certs, with_client_cert=True)
        assert _health(served.target, mtls) == _SERVING
        assert _health(served.target, _trusting(certs)) == grpc.StatusCode.UNAVAILABLE


def test_serve_refuses_unusable_tls_files_naming_the_setting(
    tmp_path: Path, redis_url: str, certs: TLSFiles
) -> None:
    missing = _write_yaml(
        tmp_path / "missing",
        redis_url,
        "server:\n  tls: {cert_file: nowhere.pem, key_file: nowhere.key}\n",
    )
    result = _serve_cli(str(missing), "--metrics-port", "0")
    assert result.returncode == 2, result.stderr
    assert "server.tls.cert_file: cannot read" in result.stderr
    mismatched = _write_yaml(
        tmp_path / "mismatched",
        redis_url,
        f"server:\n  tls: {{cert_file: {certs.server_cert}, key_file: {certs.client_key}}}\n",
    )
    result = _serve_cli(str(mismatched), "--metrics-port", "0")
    assert result.returncode == 2, result.stderr
    assert "are not a PEM certificate chain and its unencrypted private key" in result.stderr
    assert "Traceback" not in result.stderr
    (tmp_path / "not-a-ca.pem").write_text("not a certificate\n")
    bad_ca = _write_yaml(
        tmp_path / "bad-ca",
        redis_url,
        f"server:\n  tls: {{cert_file: {certs.server_cert}, key_file: {certs.server_key}, "
        f"client_ca_file: {tmp_path / 'not-a-ca.pem'}}}\n",
    )
    result = _serve_cli(str(bad_ca), "--metrics-port", "0")
    assert result.returncode == 2, result.stderr
    assert "server.tls.client_ca_file: " in result.stderr and "holds no PEM CA" in result.stderr


@pytest.mark.parametrize("where", ["flag", "config"])
def test_serve_refuses_plaintext_beyond_loopback(
    tmp_path: Path, redis_url: str, where: str
) -> None:
    server = "server:\n  host: 0.0.0.0\n" if where == "config" else ""
    repo = _write_yaml(tmp_path / "repo", redis_url, server)
    extra = ["--host", "0.0.0.0"] if where == "flag" else []
    result = _serve_cli(str(repo), *extra, "--metrics-port", "0")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "refusing to serve plaintext on 0.0.0.0" in result.stderr
    assert "--insecure" in result.stderr and "server.tls" in result.stderr
    assert "serving project" not in result.stdout


# Brings up the loopback interface of a new network namespace, then runs the CLI in it.
_IN_PRIVATE_NETWORK = """
import fcntl, os, socket, struct, sys
with socket.socket() as s:
    flags = struct.unpack("16sh", fcntl.ioctl(s, 0x8913, struct.pack("16sh", b"lo", 0)))[1]
    fcntl.ioctl(s, 0x8914, struct.pack("16sh", b"lo", flags | 1))  # SIOCSIFFLAGS: IFF_UP
os.execv(sys.executable, [sys.executable, "-m", "skewless.cli", *sys.argv[1:]])
"""


_HEALTH_CHECK = """
import sys, grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
channel = grpc.insecure_channel(sys.argv[1])
print(health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10).status)
"""


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("nsenter") is None,
    reason="needs root and util-linux (unshare, nsenter) for a private network namespace",
)
@pytest.mark.parametrize("where", ["flag", "config"])
def test_insecure_serves_plaintext_beyond_loopback_with_a_warning(
    tmp_path: Path, where: str
) -> None:
    # 0.0.0.0 is bound inside a network namespace of its own, reachable from nowhere else.
    server = "server:\n  host: 0.0.0.0\n" + ("  insecure: true\n" if where == "config" else "")
    repo = _write_yaml(tmp_path / "repo", None, server)
    args = ["serve", str(repo), "--port", "0", "--metrics-port", "0"]
    args += ["--insecure"] if where == "flag" else []
    proc = subprocess.Popen(
        ["unshare", "--net", sys.executable, "-c", _IN_PRIVATE_NETWORK, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    lines: list[str] = []
    ready = threading.Event()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if "serving project" in line:
                ready.set()
        ready.set()

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        assert ready.wait(60) and proc.poll() is None, "".join(lines)
        output = "".join(lines)
        match = re.search(r"serving project .* on 0\.0\.0\.0:(\d+) over plaintext", output)
        assert match, output
        assert "serving PLAINTEXT on 0.0.0.0 (--insecure)" in output
        # It answers, from inside its namespace.
        check = subprocess.run(
            [
                "nsenter",
                f"--net=/proc/{proc.pid}/ns/net",
                sys.executable,
                "-c",
                _HEALTH_CHECK,
                f"127.0.0.1:{match.group(1)}",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert check.stdout.strip() == str(_SERVING), check.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        reader.join(5)
        stop_process(proc)  # closes its pipe


def test_rotated_client_ca_applies_to_new_connections(
    tmp_path: Path, redis_url: str, certs: TLSFiles
) -> None:
    client_ca = tmp_path / "clients.pem"
    shutil.copy(certs.ca, client_ca)
    rotated = make_tls_files(tmp_path / "rotated")
    tls = ServerTLS(
        cert_file=certs.server_cert, key_file=certs.server_key, client_ca_file=client_ca
    )

    def with_client_cert(files: TLSFiles) -> grpc.ChannelCredentials:
        # Trusts the server's CA, presents a client certificate issued by `files`' CA.
        return grpc.ssl_channel_credentials(
            certs.read("ca"), files.read("client_key"), files.read("client_cert")
        )

    with tls_server(tmp_path / "repo", redis_url, tls) as target:
        assert _health(target, with_client_cert(certs)) == _SERVING
        assert _health(target, with_client_cert(rotated)) == grpc.StatusCode.UNAVAILABLE
        _replace(client_ca, rotated.read("ca"))
        assert _health(target, with_client_cert(rotated)) == _SERVING
        assert _health(target, with_client_cert(certs)) == grpc.StatusCode.UNAVAILABLE
