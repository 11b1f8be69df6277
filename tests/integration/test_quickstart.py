"""The README's main job, end to end and with today's clock: the steps of `make run`
(the example's data generated up to now, applied, materialized on the embedded Redis,
served), then every example the README shows against it: `examples/quickstart.py`, the
Go and Java examples and grpcurl. Each prints PRESENT values with event times within
their view's TTL, beside the deliberate NOT_FOUND row of unknown ids."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.integration import client_harness as h
from tests.integration.served import ServedProcess, serve

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "rides"
#: The TTL of each example view (examples/rides/features/*.yaml) and its features.
TTLS = {"driver_stats": dt.timedelta(days=2), "customer_profile": dt.timedelta(days=7)}
DRIVER_FEATURES = ("conv_rate", "acc_rate", "avg_daily_trips")
CUSTOMER_FEATURES = ("current_balance", "is_premium", "segment")


def run(*args: str, cwd: Path) -> str:
    done = subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _time(text: str | None) -> dt.datetime:
    assert text is not None
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def assert_fresh(feature: str, status: str, event_time: str | None, now: dt.datetime) -> None:
    """A known key's value: PRESENT (or a stored null), its event time within the TTL."""
    status = status.removeprefix("FEATURE_STATUS_")
    assert status in ("PRESENT", "NULL_VALUE"), (feature, status)
    view = "driver_stats" if feature in DRIVER_FEATURES else "customer_profile"
    age = now - _time(event_time)
    assert dt.timedelta(0) < age <= TTLS[view], (feature, event_time)


@dataclass(frozen=True)
class ServedExample:
    """The example repository as `make run` leaves it, and its server."""

    repo: Path
    server: ServedProcess

    @property
    def target(self) -> str:
        return self.server.target


@pytest.fixture(scope="module")
def served_example(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedExample]:
    """`make run`'s steps on a copy of the example: generate (now), apply, materialize, serve."""
    repo = tmp_path_factory.mktemp("make-run") / "rides"
    shutil.copytree(EXAMPLE, repo, ignore=shutil.ignore_patterns("data", ".skewless"))
    cli = ["-m", "skewless.cli"]
    run("generate_data.py", cwd=repo)
    assert "registry version 1" in run(*cli, "apply", ".", cwd=repo)
    out = run(*cli, "materialize-incremental", "--repo", ".", "--no-progress", cwd=repo)
    assert "materialized 2 feature view(s)" in out
    # The materialization ran on the embedded Redis, which persisted its data: the
    # server starts that Redis again and serves the values written before.
    with serve(repo) as served:
        yield ServedExample(repo=repo, server=served)


def test_readme_main_job_and_python_quickstart(served_example: ServedExample) -> None:
    repo = served_example.repo
    printed = run(
        str(ROOT / "examples" / "quickstart.py"),
        "--target", served_example.target,
        "--orders", str(repo / "data" / "orders.parquet"),
        cwd=repo,
    )  # fmt: skip
    now = dt.datetime.now(dt.UTC)
    result = json.loads(printed)
    assert "driver_stats:avg_daily_trips" in result["search"]
    statuses = result["online"]["statuses"]
    times = result["online"]["event_times"]
    assert result["online"]["values"]["driver_id"] == [1001, 9999]
    for feature in ("conv_rate", "acc_rate", "current_balance", "is_premium"):
        (known, unknown), (known_time, unknown_time) = statuses[feature], times[feature]
        assert known == "PRESENT", (feature, known)
        assert_fresh(feature, known, known_time, now)
        assert (unknown, unknown_time) == ("NOT_FOUND", None)
    assert result["online"]["values"]["conv_rate"][0] is not None
    assert result["training"]["rows"] == 500
    assert result["training"]["columns"][:5] == [
        "order_id", "driver_id", "customer_id", "event_timestamp", "trip_completed",
    ]  # fmt: skip
    assert result["training"]["columns"][5:] == [
        "conv_rate", "acc_rate", "avg_daily_trips", "current_balance", "is_premium",
    ]  # fmt: skip
    assert result["error"]["code"] == "NOT_FOUND"
    assert "no_such" in result["error"]["message"]


def assert_contract_lookups_fresh(answers: dict[str, Any], who: str) -> None:
    """The examples' lookups (client_harness.LOOKUPS) on today's example data."""
    now = dt.datetime.now(dt.UTC)
    by_name = {a["name"]: a for a in answers["lookups"]}
    service = {r["name"]: r for r in by_name["feature_service"]["results"]}
    # Rows: (1001, 2001), (1002, 2002), (1003, 8888), (9999, 2004).
    present = 0
    for feature in (*DRIVER_FEATURES, "current_balance", "is_premium"):
        vector = service[feature]
        unknown = 3 if feature in DRIVER_FEATURES else 2  # driver 9999, customer 8888
        for row, (status, when) in enumerate(
            zip(vector["statuses"], vector["event_times"], strict=True)
        ):
            status = status.removeprefix("FEATURE_STATUS_")
            if row == unknown:
                assert (status, when, vector["values"][row]) == ("NOT_FOUND", None, None), who
                continue
            assert_fresh(feature, status, when, now)
            present += status == "PRESENT"
    assert present >= 12, (who, service)
    listed = {r["name"]: r for r in by_name["feature_list"]["results"]}
    assert [
        s.removeprefix("FEATURE_STATUS_") for s in listed["driver_stats__conv_rate"]["statuses"]
    ] == ["PRESENT", "PRESENT"], who
    assert by_name["unknown_feature"]["error"]["code"] == "NOT_FOUND", who


def test_grpcurl_example_prints_present_values(served_example: ServedExample) -> None:
    if not h.GRPCURL.exists():
        pytest.skip("grpcurl is not installed (make tools)")
    assert_contract_lookups_fresh(h.grpcurl_answers(served_example.target), "grpcurl")


@pytest.mark.skipif(h.go_binary() is None, reason="the go toolchain is not installed")
def test_go_example_prints_present_values(served_example: ServedExample, tmp_path: Path) -> None:
    go = h.go_binary()
    assert go is not None
    env = {**os.environ, "GOFLAGS": "-buildvcs=false", "GOTOOLCHAIN": "local"}
    binary = tmp_path / "example"
    subprocess.run(
        [go, "build", "-o", str(binary), "./cmd/example"], cwd=h.GO_DIR, env=env, check=True
    )
    result = subprocess.run(
        [str(binary), "-addr", served_example.target], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert_contract_lookups_fresh(json.loads(result.stdout), "Go")


@pytest.mark.skipif(h.mvn_binary() is None, reason="Maven (mvn) is not installed")
def test_java_example_prints_present_values(served_example: ServedExample) -> None:
    example = "dev.skewless.client.example.Example"
    result = subprocess.run(
        ["java", "-cp", h.java_classpath(), example, "--addr", served_example.target],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert_contract_lookups_fresh(json.loads(result.stdout), "Java")


def test_readme_quotes_the_examples_it_names() -> None:
    """Every README block introduced by `<!-- file: PATH -->` is that file, verbatim."""
    readme = (ROOT / "README.md").read_text()
    marker = "<!-- file: "
    quoted = 0
    for chunk in readme.split(marker)[1:]:
        path, rest = chunk.split(" -->", 1)
        body = rest.split("```", 2)[1].split("\n", 1)[1]
        assert body == (ROOT / path).read_text(), f"README copy of {path} is stale"
        quoted += 1
    assert quoted >= 1
