"""Historical retrieval across languages: Go and Java read exactly what the Python client reads.

The server sends GetHistoricalFeatures responses as pre-built wire bytes whose length
varints are padded (so that Arrow bodies land 8-byte aligned). One real server holds the
contract fixture with offline history (`contract_history`): entity rows with stored nulls,
a label time outside the TTL and one inside it, no candidate at all, an event-time tie, an
unknown driver and a second entity (customer). Go (generated stubs + Apache Arrow Go) and
Java (generated stubs + Apache Arrow Java) run their live tests against it, and their
example programs print the canonical JSON form of `historical_harness.HISTORICAL_QUESTIONS`,
which must equal the Python client's answers column by column, batch sizes and errors
included. A leg is skipped only when its toolchain (go, mvn) is absent.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from skewless.online.embedded_redis import EmbeddedRedis

try:
    from . import client_harness as h
    from . import contract_history as history
    from . import historical_harness as hh
except ImportError:
    import client_harness as h  # type: ignore[no-redef]
    import contract_history as history  # type: ignore[no-redef]
    import historical_harness as hh  # type: ignore[no-redef]

GO = h.go_binary()
MVN = h.mvn_binary()
needs_go = pytest.mark.skipif(GO is None, reason="the go toolchain is not installed")
needs_mvn = pytest.mark.skipif(MVN is None, reason="Maven (mvn) is not installed")


def assert_same_answers(leg: str, answers: dict[str, Any], reference: dict[str, Any]) -> None:
    """Compares one client's canonical answers with the Python client's, query by query."""
    names = [q["name"] for q in answers["queries"]]
    assert names == [q["name"] for q in reference["queries"]], f"{leg}: queries {names}"
    for mine, ref in zip(answers["queries"], reference["queries"], strict=True):
        if "error" in ref or "error" in mine:
            assert mine == ref, f"{leg} disagrees with the Python client on {ref['name']!r}"
            continue
        assert mine["batches"] == ref["batches"], f"{leg}: batch sizes of {ref['name']!r}"
        for got, want in zip(mine["columns"], ref["columns"], strict=True):
            assert got == want, f"{leg}: column {want['name']!r} of {ref['name']!r}"


@pytest.fixture(scope="module")
def fixture(
    redis_server: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[h.Fixture]:
    with h.serve_fixture(tmp_path_factory.mktemp("xlang-historical"), redis_server.url) as served:
        yield served


@pytest.fixture(scope="module")
def reference(fixture: h.Fixture) -> dict[str, Any]:
    """The Python client's answers, which every other client must reproduce."""
    return hh.python_client_historical_answers(fixture.addr)


def _columns(answer: dict[str, Any]) -> dict[str, list[Any]]:
    return {c["name"]: c["values"] for c in answer["columns"]}


def test_python_client_answers_the_historical_contract(
    fixture: h.Fixture, reference: dict[str, Any]
) -> None:
    by_name = {q["name"]: q for q in reference["queries"]}
    service = by_name["feature_service"]
    assert service["batches"] == [4, 4, 2]
    columns = _columns(service)
    assert list(columns) == [
        *("driver_id", "customer_id", "event_timestamp", "trip_id", "label"),
        *("conv_rate", "acc_rate", "avg_daily_trips", "current_balance", "is_premium"),
    ]
    # Input columns come back unchanged and in input order.
    rows = hh.canonical_batches(history.entity_rows().schema, history.entity_rows().to_batches())
    for column in rows["columns"]:
        assert columns[column["name"]] == column["values"], column["name"]
    assert columns["avg_daily_trips"] == list(history.EXPECTED_TRIPS)
    assert columns["current_balance"] == list(history.EXPECTED_BALANCE)
    conv = columns["conv_rate"]
    assert conv[2] is None  # stored null, label time == event time
    assert conv[3] is None  # the only candidate is older than the TTL
    assert conv[4] == pytest.approx(0.1, rel=1e-7)  # the same row, inside the TTL
    assert conv[6] is None  # no candidate before the label time
    assert columns["is_premium"][:3] == [True, None, None]  # 2002 only has a later row
    types = {c["name"]: c["type"] for c in service["columns"]}
    assert types["conv_rate"] == "float32"
    assert types["event_timestamp"].startswith("timestamp[us")
    listed = _columns(by_name["feature_list"])
    assert listed["customer_profile__segment"][5] == "économie ✓"
    assert by_name["unknown_feature"]["error"]["code"] == "NOT_FOUND"
    assert by_name["missing_rows"]["error"]["code"] == "INVALID_ARGUMENT"
    assert by_name["missing_rows"]["error"]["fields"] == ["query.path"]
    # The generated Python stub and message classes agree with the Python client.
    assert_same_answers(
        "the Python stub", hh.python_stub_historical_answers(fixture.addr), reference
    )


def _go(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    assert GO is not None
    environ = {**os.environ, "GOFLAGS": "-buildvcs=false", "GOTOOLCHAIN": "local"}
    environ.pop("SKEWLESS_ADDR", None)
    return subprocess.run(
        [GO, *args],
        cwd=h.GO_DIR,
        env={**environ, **env},
        capture_output=True,
        text=True,
        timeout=600,
    )


@needs_go
def test_go_live_historical_tests_pass(fixture: h.Fixture) -> None:
    result = _go(
        "test", "-count=1", "-v", "-run", "Historical", "./skewless", SKEWLESS_ADDR=fixture.addr
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for name in (
        "TestLiveHistoricalFeatureService",
        "TestLiveHistoricalFeatureListCompressed",
        "TestLiveHistoricalResponsesParseWithTheGeneratedTypes",
        "TestLiveHistoricalErrors",
        "TestLiveHistoricalCloseEarlyCancels",
    ):
        assert f"--- PASS: {name} " in result.stdout, result.stdout
    assert "SKIP" not in result.stdout, result.stdout


@needs_go
def test_go_reads_the_same_rows(
    fixture: h.Fixture, reference: dict[str, Any], tmp_path: Path
) -> None:
    binary = tmp_path / "historical"
    built = _go("build", "-o", str(binary), "./cmd/historical")
    assert built.returncode == 0, built.stderr
    result = subprocess.run(
        [str(binary), "-addr", fixture.addr], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert_same_answers("Go", json.loads(result.stdout), reference)


@needs_mvn
def test_java_live_historical_tests_pass(fixture: h.Fixture) -> None:
    assert MVN is not None
    assert Path(h.GRPC_JAVA_PLUGIN).exists(), (
        f"{h.GRPC_JAVA_PLUGIN} is missing: apt-get install protobuf-compiler-grpc-java-plugin"
    )
    report = (
        h.JAVA_DIR
        / "target"
        / "surefire-reports"
        / "TEST-dev.skewless.client.HistoricalLiveTest.xml"
    )
    report.unlink(missing_ok=True)
    result = subprocess.run(
        [
            MVN,
            "-q",
            "-B",
            "test",
            "-Dtest=HistoricalLiveTest",
            "-Dsurefire.failIfNoSpecifiedTests=false",
        ],
        cwd=h.JAVA_DIR,
        env={**os.environ, "SKEWLESS_ADDR": fixture.addr},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    counts = h.surefire_counts("HistoricalLiveTest")
    assert counts["tests"] >= 5 and counts["skipped"] == 0, counts
    assert counts["failures"] == counts["errors"] == 0, counts


@needs_mvn
def test_java_reads_the_same_rows(fixture: h.Fixture, reference: dict[str, Any]) -> None:
    java = shutil.which("java")
    assert java is not None, "mvn is installed but java is not on PATH"
    result = subprocess.run(
        [
            *(java, "-cp", h.java_classpath()),
            *("dev.skewless.client.example.HistoricalExample", "--addr", fixture.addr),
        ],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert_same_answers("Java", json.loads(result.stdout), reference)
