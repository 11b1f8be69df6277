"""The Java client (clients/java) against a live server holding the contract fixture.

Runs `mvn test` with SKEWLESS_ADDR set (the JUnit live-server tests then run instead of
skipping) and the runnable example with plain `java -cp`. Skipped only when `mvn` is absent.
The first build downloads the Maven dependencies (see docs/clients.md for the time it takes).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from skewless.online.embedded_redis import EmbeddedRedis

try:
    from . import client_harness as h
except ImportError:
    import client_harness as h  # type: ignore[no-redef]

MVN = h.mvn_binary()
pytestmark = pytest.mark.skipif(MVN is None, reason="Maven (mvn) is not installed")


@pytest.fixture(scope="module")
def fixture(
    redis_server: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[h.Fixture]:
    with h.serve_fixture(tmp_path_factory.mktemp("java-fixture"), redis_server.url) as served:
        yield served


def test_junit_tests_pass_against_live_server(fixture: h.Fixture) -> None:
    assert MVN is not None
    assert Path(h.GRPC_JAVA_PLUGIN).exists(), (
        f"{h.GRPC_JAVA_PLUGIN} is missing: apt-get install protobuf-compiler-grpc-java-plugin"
    )
    env = {**os.environ, "SKEWLESS_ADDR": fixture.addr}
    result = subprocess.run(
        [MVN, "-q", "-B", "test"],
        cwd=h.JAVA_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    live = h.surefire_counts("LiveServerTest")
    assert live["tests"] >= 6 and live["skipped"] == 0, live
    assert live["failures"] == live["errors"] == 0, live
    historical = h.surefire_counts("HistoricalLiveTest")
    assert historical["tests"] >= 5 and historical["skipped"] == 0, historical
    assert historical["failures"] == historical["errors"] == 0, historical
    unit = h.surefire_counts("SkewlessClientTest")
    assert unit["tests"] >= 4 and unit["failures"] == unit["errors"] == 0, unit
    # Bearer tokens and call credentials, checked at a loopback server that records them.
    credentials = h.surefire_counts("CallCredentialsTest")
    assert credentials["tests"] >= 5 and credentials["skipped"] == 0, credentials
    assert credentials["failures"] == credentials["errors"] == 0, credentials


def test_java_example_prints_the_canonical_answers(fixture: h.Fixture) -> None:
    java = shutil.which("java")
    assert java is not None, "mvn is installed but java is not on PATH"
    classpath = h.java_classpath()
    result = subprocess.run(
        [java, "-cp", classpath, "dev.skewless.client.example.Example", "--addr", fixture.addr],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    answers = json.loads(result.stdout)
    assert [a["name"] for a in answers["lookups"]] == [lk.name for lk in h.LOOKUPS]
    assert answers == h.python_stub_answers(fixture.addr)
