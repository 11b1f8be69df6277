"""The server process: health, reflection, graceful shutdown, embedded Redis."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import grpc
import pytest
import redis
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from skewless.online.embedded_redis import EmbeddedRedis
from skewless.server.app import SERVICE_NAMES
from tests.integration.served import serve, write_repo

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
ROOT = Path(__file__).resolve().parents[2]


def grpcurl() -> str:
    found = shutil.which("grpcurl") or str(ROOT / ".tools" / "bin" / "grpcurl")
    if not os.access(found, os.X_OK):
        pytest.fail("grpcurl is not installed: run `make tools`")
    return found


def health_status(target: str, service: str = "") -> int:
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status


def wait_for_status(target: str, want: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    status = None
    while time.monotonic() < deadline:
        status = health_status(target)
        if status == want:
            return
        time.sleep(0.1)
    raise AssertionError(f"health stayed {status}, wanted {want}")


def test_serves_health_and_reflection(tmp_path: Path, redis_url: str) -> None:
    repo = write_repo(tmp_path / "repo", redis_url=redis_url)
    with serve(repo) as served:
        assert health_status(served.target) == SERVING
        for name in SERVICE_NAMES:
            assert health_status(served.target, name) == SERVING
        with grpc.insecure_channel(served.target) as channel:
            db = ProtoReflectionDescriptorDatabase(channel)
            services = set(db.get_services())
            assert set(SERVICE_NAMES) <= services
            assert "grpc.health.v1.Health" in services
            desc = db.FindFileContainingSymbol("skewless.v1.OnlineService")
            assert desc.package == "skewless.v1"


def test_unimplemented_or_unapplied_answers_are_clear(tmp_path: Path, redis_url: str) -> None:
    from skewless.v1 import registry_service_pb2, registry_service_pb2_grpc

    repo = write_repo(tmp_path / "repo", redis_url=redis_url)
    with serve(repo) as served, grpc.insecure_channel(served.target) as channel:
        stub = registry_service_pb2_grpc.RegistryServiceStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            stub.ListFeatureViews(registry_service_pb2.ListFeatureViewsRequest(), timeout=5)
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "skewless apply" in err.value.details()


def test_grpcurl_lists_and_describes_every_service(tmp_path: Path, redis_url: str) -> None:
    repo = write_repo(tmp_path / "repo", redis_url=redis_url)
    with serve(repo) as served:
        listed = subprocess.run(
            [grpcurl(), "-plaintext", served.target, "list"],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout.split()  # fmt: skip
        assert set(SERVICE_NAMES) <= set(listed)
        for name in SERVICE_NAMES:
            described = subprocess.run(
                [grpcurl(), "-plaintext", served.target, "describe", name],
                capture_output=True, text=True, timeout=30, check=True,
            ).stdout  # fmt: skip
            assert f"service {name.split('.')[-1]}" in described
            assert "rpc " in described


def test_sigterm_goes_not_serving_then_exits_cleanly(tmp_path: Path, redis_url: str) -> None:
    repo = write_repo(tmp_path / "repo", redis_url=redis_url)
    with serve(repo, "--grace", "2") as served:
        channel = grpc.insecure_channel(served.target)
        watch = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service=""), timeout=20
        )
        assert next(watch).status == SERVING
        served.proc.send_signal(signal.SIGTERM)
        assert next(watch).status == NOT_SERVING
        assert served.proc.wait(20) == 0
        channel.close()
    assert "shutting down" in served.output()


def test_health_follows_redis(tmp_path: Path, fresh_redis: EmbeddedRedis) -> None:
    repo = write_repo(tmp_path / "repo", redis_url=fresh_redis.url)
    with serve(repo) as served:
        wait_for_status(served.target, SERVING)
        fresh_redis.stop()
        wait_for_status(served.target, NOT_SERVING)
        fresh_redis.start()
        wait_for_status(served.target, SERVING)


def test_embedded_redis_starts_and_stops_with_the_server(tmp_path: Path) -> None:
    repo = write_repo(tmp_path / "repo", redis_url=None)
    with serve(repo) as served:
        assert health_status(served.target) == SERVING
        line = next(line for line in served.lines if "started embedded redis-server" in line)
        url = line.split(" on ")[1].split()[0]
        assert redis.Redis.from_url(url).ping()
        assert (repo / ".skewless" / "redis").is_dir()
    assert served.proc.returncode == 0
    assert "stopping embedded redis-server" in served.output()
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()


def test_serve_with_two_workers_answers_and_stops(tmp_path: Path, redis_url: str) -> None:
    repo = write_repo(tmp_path / "repo", redis_url=redis_url)
    with serve(repo, "--workers", "2", "--grace", "1") as served:
        assert "with 2 workers" in served.output()
        wait_for_status(served.target, SERVING, timeout=30)
        served.proc.send_signal(signal.SIGTERM)
        assert served.proc.wait(30) == 0


def test_materialize_writes_into_the_embedded_redis_of_a_running_server(tmp_path: Path) -> None:
    import shutil as sh
    import sys

    example = ROOT / "examples" / "rides"
    repo = tmp_path / "rides"
    sh.copytree(example, repo, ignore=sh.ignore_patterns("data", ".skewless"))
    python = [sys.executable]
    subprocess.run([*python, "generate_data.py"], cwd=repo, check=True, capture_output=True)
    cli = [*python, "-m", "skewless.cli"]
    subprocess.run([*cli, "apply", "."], cwd=repo, check=True, capture_output=True)
    with serve(repo) as served:
        line = next(line for line in served.lines if "started embedded redis-server" in line)
        url = line.split(" on ")[1].split()[0]
        assert redis.Redis.from_url(url).dbsize() == 0
        done = subprocess.run(
            [*cli, "materialize-incremental", "--repo", ".", "--no-progress"],
            cwd=repo, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        # 200 drivers and 100 customers, written into the server's own Redis.
        assert redis.Redis.from_url(url).dbsize() == 300
