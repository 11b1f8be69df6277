"""The cross-language contract: Python, Go, Java and grpcurl give identical answers.

One server holds the fixture (a feature service over several entities with a missing
entity, a stored null and a value older than the TTL; an explicit feature list with full
names; an unknown feature; a key of the wrong type). Each client asks the same questions
(`client_harness.LOOKUPS`) and prints the canonical JSON form (docs/clients.md); every
answer must equal the Python client's: values, statuses, event times and error codes.
A leg is skipped only when its toolchain (go, mvn, grpcurl) is absent.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from skewless.online.embedded_redis import EmbeddedRedis

try:
    from . import client_harness as h
except ImportError:
    import client_harness as h  # type: ignore[no-redef]


def assert_same_answers(leg: str, answers: dict[str, Any], reference: dict[str, Any]) -> None:
    """Compares one client's canonical answers with the Python client's, lookup by lookup."""
    names = [a["name"] for a in answers["lookups"]]
    assert names == [a["name"] for a in reference["lookups"]], f"{leg}: lookups {names}"
    for mine, ref in zip(answers["lookups"], reference["lookups"], strict=True):
        assert mine == ref, f"{leg} disagrees with the Python client on {ref['name']!r}"


@pytest.fixture(scope="module")
def fixture(
    redis_server: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[h.Fixture]:
    with h.serve_fixture(tmp_path_factory.mktemp("xlang-fixture"), redis_server.url) as served:
        yield served


@pytest.fixture(scope="module")
def reference(fixture: h.Fixture) -> dict[str, Any]:
    """The Python client's answers, which every other client must reproduce."""
    return h.python_client_answers(fixture.addr)


def test_python_client_answers_the_contract(fixture: h.Fixture, reference: dict[str, Any]) -> None:
    by_name = {a["name"]: a for a in reference["lookups"]}
    service = {r["name"]: r for r in by_name["feature_service"]["results"]}
    assert service["conv_rate"]["statuses"] == [
        "FEATURE_STATUS_PRESENT",
        "FEATURE_STATUS_NULL_VALUE",
        "FEATURE_STATUS_OUTSIDE_MAX_AGE",
        "FEATURE_STATUS_NOT_FOUND",
    ]
    assert service["conv_rate"]["event_times"] == [
        "2025-06-01T12:00:00.123456Z",
        "2025-06-01T13:30:00.000000Z",
        "2001-02-03T04:05:06.000000Z",
        None,
    ]
    assert service["avg_daily_trips"]["values"] == [42, 7, None, None]
    assert by_name["unknown_feature"]["error"]["code"] == "NOT_FOUND"
    assert by_name["wrong_key_type"]["error"]["code"] == "INVALID_ARGUMENT"
    assert by_name["wrong_key_type"]["error"]["fields"]
    # The generated Python stub agrees with the Python client.
    assert_same_answers("the Python stub", h.python_stub_answers(fixture.addr), reference)


@pytest.mark.skipif(h.go_binary() is None, reason="the go toolchain is not installed")
def test_go_example_agrees(fixture: h.Fixture, reference: dict[str, Any], tmp_path: Path) -> None:
    go = h.go_binary()
    assert go is not None
    env = {**os.environ, "GOFLAGS": "-buildvcs=false", "GOTOOLCHAIN": "local"}
    binary = tmp_path / "example"
    subprocess.run(
        [go, "build", "-o", str(binary), "./cmd/example"], cwd=h.GO_DIR, env=env, check=True
    )
    result = subprocess.run(
        [str(binary), "-addr", fixture.addr], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert_same_answers("Go", json.loads(result.stdout), reference)


@pytest.mark.skipif(h.mvn_binary() is None, reason="Maven (mvn) is not installed")
def test_java_example_agrees(fixture: h.Fixture, reference: dict[str, Any]) -> None:
    result = subprocess.run(
        [
            "java",
            "-cp",
            h.java_classpath(),
            "dev.skewless.client.example.Example",
            "--addr",
            fixture.addr,
        ],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert_same_answers("Java", json.loads(result.stdout), reference)


@pytest.mark.skipif(not h.GRPCURL.exists(), reason="grpcurl is not installed (run `make tools`)")
def test_grpcurl_agrees(fixture: h.Fixture, reference: dict[str, Any]) -> None:
    assert_same_answers("grpcurl", h.grpcurl_answers(fixture.addr), reference)
