"""Shared fixtures: real `redis-server` processes and a real S3-compatible server on free ports."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from skewless.online.embedded_redis import EmbeddedRedis
from tests.helpers.engines import ENGINES, SPARK_TEST_SETTINGS, Engine
from tests.helpers.redis_cluster import RedisClusterNodes, start_cluster
from tests.helpers.s3 import S3Server, S3ServerError, running_s3_server


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    """One real redis-server for the whole session (tests must use distinct projects or flush)."""
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"), persist=False).start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: EmbeddedRedis) -> Iterator[str]:
    """A URL of the session Redis, flushed before each test."""
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    yield redis_server.url


@pytest.fixture
def fresh_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """A private redis-server for tests that stop or restart it."""
    server = EmbeddedRedis(tmp_path / "redis", persist=False).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """One real S3-compatible server (SeaweedFS `weed`) with a bucket, for the whole session.

    Tests share the bucket: each writes under its own prefix. Fails (never skips) when `weed`
    is missing: `make setup` builds it.
    """
    failure = None
    try:
        with running_s3_server(tmp_path_factory.mktemp("s3")) as server:
            yield server
    except S3ServerError as exc:
        failure = str(exc)
    if failure is not None:
        pytest.fail(failure, pytrace=False)


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterNodes]:
    """One real three-node Redis Cluster for the session (flush it before use)."""
    with start_cluster(tmp_path_factory.mktemp("cluster")) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def spark() -> Iterator[Any]:
    """One real local Spark session (two cores) for the whole test run."""
    from skewless.offline.spark_session import spark_session, stop_spark_sessions

    session = spark_session(SPARK_TEST_SETTINGS)
    session.sparkContext.setLogLevel("ERROR")
    yield session
    stop_spark_sessions()


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> Engine:
    """Each offline engine in turn: a test taking it runs on DuckDB and on Spark."""
    if request.param == "spark":
        return Engine("spark", request.getfixturevalue("spark"))
    return Engine("duckdb")
