"""The skew report finds exactly the differences a test induces, and nothing else.

A real redis-server, the real server with its scheduler, one view materialized by the
schedule (`driver_stats`, daily: slower than its data) and one fed by pushes
(`driver_live`). Each driver gets one kind of difference, induced the way it happens in
production; the report over the logged calls must put exactly those (row, feature)
pairs in the expected category, and every other pair in MATCH or EXPECTED_EMPTY.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import redis
from prometheus_client import REGISTRY

from skewless.client import Client, FailedPreconditionError, InvalidArgumentError, NotFoundError
from skewless.core.config import RepoConfig
from skewless.materialization.schedule import due_boundary
from skewless.offline.skew import CATEGORY_NAMES
from skewless.online.layout import redis_key
from skewless.registry import (
    Entity,
    Feature,
    FeatureLogging,
    FeatureService,
    FeatureView,
    FileSource,
    PushSource,
    RepoDefinitions,
)
from skewless.server.services.monitoring import SkewReportSchedule
from skewless.v1 import (
    materialization_service_pb2,
    monitoring_service_pb2,
    online_service_pb2,
    types_pb2,
)
from tests.helpers.repos import repo_config, save_registry
from tests.integration.served import ServerThread

PROJECT = "skew"
DAY = timedelta(days=1)
DEST = online_service_pb2.PushDestination


def definitions() -> RepoDefinitions:
    driver = Entity(name="driver", join_keys=("driver_id",), value_type="INT64")
    stats_source = FileSource(name="driver_src", path="data/driver.parquet", timestamp_field="ts")
    push = PushSource(name="driver_push", timestamp_field="ts")
    stats = FeatureView(
        name="driver_stats",
        entities=(driver,),
        source=stats_source,
        features=(Feature("conv_rate", "FLOAT64"), Feature("trips", "INT64")),
        schedule="1d",
    )
    live = FeatureView(
        name="driver_live",
        entities=(driver,),
        source=push,
        features=(Feature("speed", "FLOAT32"), Feature("note", "STRING")),
    )
    return RepoDefinitions(
        feature_views=(stats, live),
        feature_services=(
            FeatureService(
                name="ranking",
                features=("driver_stats", "driver_live"),
                logging=FeatureLogging(sample_rate=1.0, report_schedule="1m"),
            ),
        ),
    )


def source_rows(rows: list[tuple[int, datetime]]) -> pa.Table:
    return pa.table(
        {
            "driver_id": pa.array([d for d, _ in rows], pa.int64()),
            "ts": pa.array([t for _, t in rows], pa.timestamp("us", tz="UTC")),
            "conv_rate": pa.array([d + t.timestamp() % 1000 / 1000 for d, t in rows]),
            "trips": pa.array([d * 10 + int(t.timestamp()) % 7 for d, t in rows], pa.int64()),
        }
    )


def live_rows(ids: list[int], when: datetime, speed: float) -> pa.Table:
    return pa.table(
        {
            "driver_id": pa.array(ids, pa.int64()),
            "ts": pa.array([when] * len(ids), pa.timestamp("us", tz="UTC")),
            "speed": pa.array([speed + i for i in ids], pa.float32()),
            "note": pa.array([f"d{i}" for i in ids], pa.string()),
        }
    )


def wait_job(client: Client, job_id: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        job = client.get_materialization_job(job_id)
        if job.state == materialization_service_pb2.JOB_STATE_SUCCEEDED:
            return
        assert job.state != materialization_service_pb2.JOB_STATE_FAILED, job.error_status
        time.sleep(0.1)
    raise AssertionError("materialization did not finish")


def cli(config: RepoConfig, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "skewless.cli", "skew", "--repo", str(config.root), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def write_config_file(config: RepoConfig) -> None:
    (config.root / "skewless.yaml").write_text(
        f"project: {PROJECT}\ndata_dir: .skewless\n"
        f"online_store: {{redis_url: {config.redis_url}}}\n"
    )


@pytest.fixture
def scenario(tmp_path: Path, redis_url: str):
    config = repo_config(tmp_path / "repo", PROJECT, redis_url, feature_log_flush_seconds=0.2)
    write_config_file(config)
    now = datetime.now(UTC)
    boundary = due_boundary(now, DAY)  # the last time the daily schedule materializes to
    after = boundary + (now - boundary) / 2  # data newer than the schedule has reached
    source = config.root / "data" / "driver.parquet"
    source.parent.mkdir(parents=True)
    base = [(d, boundary - timedelta(hours=2)) for d in range(1, 9)]
    base += [(d, boundary - timedelta(minutes=30)) for d in range(1, 9)]
    pq.write_table(source_rows([*base, (6, after)]), source)
    save_registry(config, definitions())
    server = ServerThread(config, run_schedules=True).start()
    client = Client(f"127.0.0.1:{server.port}")
    r = redis.Redis.from_url(redis_url)
    try:
        # The scheduler materializes driver_stats up to the boundary on its own.
        deadline = time.monotonic() + 60
        while not all(r.exists(redis_key(PROJECT, "driver_stats", [d])) for d in range(1, 9)):
            assert time.monotonic() < deadline, "the scheduler did not materialize"
            time.sleep(0.1)
        client.push_features(
            live_rows(list(range(1, 9)), boundary - timedelta(minutes=30), 1.5),
            push_source="driver_push",
        )
        yield config, client, r, boundary, after
    finally:
        client.close()
        r.close()
        server.stop()


def serve(client: Client, ids: list[int]) -> str:
    request = online_service_pb2.GetOnlineFeaturesRequest(
        feature_service="ranking", full_feature_names=True
    )
    request.entities["driver_id"].values.extend(types_pb2.Value(int64_value=i) for i in ids)
    _, call = client._online.GetOnlineFeatures.with_call(request, timeout=10)
    return dict(call.trailing_metadata())["x-skewless-request-id"]


def test_each_induced_difference_is_found_and_nothing_else(scenario) -> None:
    config, client, r, boundary, after = scenario
    started = datetime.now(UTC)
    trap = serve(client, [1, 7, 8, 99])  # logged too: no example may name it
    trap_end = datetime.now(UTC)
    # driver 2: a push to the online store only (newer than anything offline).
    client.push_features(
        live_rows([2], datetime.now(UTC) - timedelta(seconds=1), 9.0),
        push_source="driver_push",
        destination=DEST.PUSH_DESTINATION_ONLINE,
    )
    pushed = serve(client, [2])
    # driver 3: its Redis key deleted.
    r.delete(redis_key(PROJECT, "driver_stats", [3]))
    deleted = serve(client, [3])
    # driver 4: a value overwritten in Redis by hand (same event time).
    r.hset(
        redis_key(PROJECT, "driver_stats", [4]),
        b"conv_rate",
        types_pb2.Value(double_value=-1.0).SerializeToString(),
    )
    overwritten = serve(client, [4])
    # driver 5: served, then a late source row is re-materialized inside the served window.
    late = serve(client, [5])
    # driver 6: the daily schedule is slower than the data: its newest row is not online.
    lagging = serve(client, [6])
    served_end = datetime.now(UTC)
    source = config.root / "data" / "driver.parquet"
    table = pq.read_table(source)
    late_time = boundary - timedelta(minutes=10)
    pq.write_table(pa.concat_tables([table, source_rows([(5, late_time)])]), source)
    job = client.start_materialization(
        ["driver_stats"], start_time=boundary - timedelta(hours=1), end_time=served_end
    )
    wait_job(client, job.job_id)
    time.sleep(0.6)  # two flush intervals of the log

    report = client.get_skew_report("ranking", max_examples=100)
    assert report.logged_requests == 6 and report.logged_rows == 9
    found = {
        (
            f.feature_view,
            f.feature,
            CATEGORY_NAMES[e.category],
            e.request_id,
            e.entity_key["driver_id"].int64_value,
        )
        for f in report.features
        for e in f.examples
    }
    assert trap not in {e.request_id for f in report.features for e in f.examples}
    assert found == {
        ("driver_live", "speed", "SERVED_AHEAD", pushed, 2),
        ("driver_live", "note", "SERVED_AHEAD", pushed, 2),
        ("driver_stats", "conv_rate", "MISSING_ONLINE", deleted, 3),
        ("driver_stats", "trips", "MISSING_ONLINE", deleted, 3),
        ("driver_stats", "conv_rate", "VALUE_MISMATCH", overwritten, 4),
        ("driver_stats", "conv_rate", "SERVED_STALE", late, 5),
        ("driver_stats", "trips", "SERVED_STALE", late, 5),
        ("driver_stats", "conv_rate", "SERVED_STALE", lagging, 6),
        ("driver_stats", "trips", "SERVED_STALE", lagging, 6),
    }
    counts = {
        (f.feature_view, f.feature): {
            CATEGORY_NAMES[c.category]: c.count for c in f.categories if c.count
        }
        for f in report.features
    }
    assert counts[("driver_stats", "conv_rate")] == {
        "MATCH": 4,  # 1, 7, 8 and 2
        "EXPECTED_EMPTY": 1,  # 99
        "MISSING_ONLINE": 1,
        "VALUE_MISMATCH": 1,
        "SERVED_STALE": 2,
    }
    assert counts[("driver_live", "note")] == {"MATCH": 7, "EXPECTED_EMPTY": 1, "SERVED_AHEAD": 1}
    conv = next(f for f in report.features if f.feature == "conv_rate")
    mismatch = next(e for e in conv.examples if e.category == 2)
    assert mismatch.served_value.double_value == -1.0
    assert mismatch.served_event_time == mismatch.offline_event_time
    stale = {
        e.entity_key["driver_id"].int64_value: e
        for e in conv.examples
        if CATEGORY_NAMES[e.category] == "SERVED_STALE"
    }
    lag5 = stale[5].offline_event_time.ToDatetime(UTC) - stale[5].served_event_time.ToDatetime(UTC)
    assert lag5 == timedelta(minutes=20)
    assert stale[6].offline_event_time.ToDatetime(UTC) == after
    assert conv.stale_lag.count == 2
    assert conv.stale_lag.p50.ToTimedelta() == lag5  # nearest rank: the 1st of 2
    assert conv.stale_lag.p99.ToTimedelta() == conv.stale_lag.max.ToTimedelta()
    assert conv.stale_lag.max.ToTimedelta() == max(lag5, after - (boundary - timedelta(minutes=30)))
    freshness = {v.feature_view: v for v in report.views}
    assert freshness["driver_stats"].stale_rows == 2
    assert freshness["driver_live"].stale_rows == 0
    assert report.mismatch_rate == pytest.approx(9 / (9 * 4))

    # The trap workload alone: nothing induced, nothing found.
    trap_only = client.get_skew_report("ranking", start_time=started, end_time=trap_end)
    assert trap_only.logged_requests == 1 and trap_only.mismatch_rate == 0
    assert not any(f.examples for f in trap_only.features)

    # The CLI computes the same report; --fail-above turns it into an exit code.
    write_config_file(config)
    whole = cli(config, "--service", "ranking", "--json", "--examples", "100")
    assert whole.returncode == 0, whole.stderr
    assert json.loads(whole.stdout)["mismatchRate"] == pytest.approx(report.mismatch_rate)
    failing = cli(config, "--service", "ranking", "--fail-above", "0.01")
    assert failing.returncode == 1 and "SERVED_STALE" in failing.stdout
    passing = cli(
        config,
        "--service",
        "ranking",
        "--since",
        started.isoformat(),
        "--until",
        trap_end.isoformat(),
        "--fail-above",
        "0",
    )
    assert passing.returncode == 0, passing.stdout + passing.stderr
    assert "mismatch rate 0.0000%" in passing.stdout

    # Run by the server on `logging.report_schedule`: the report becomes gauges.
    schedule = SkewReportSchedule(_ctx_of(client, config))
    first = started.timestamp() - 1
    assert schedule.run_due(first) == []  # the first period starts now
    (published,) = schedule.run_due(first + 60)
    assert published.logged_rows == 9
    gauge = REGISTRY.get_sample_value
    assert gauge("skewless_skew_mismatch_rate", {"feature_service": "ranking"}) == pytest.approx(
        0.25
    )
    assert gauge(
        "skewless_skew_rate",
        {
            "feature_service": "ranking",
            "feature_view": "driver_stats",
            "feature": "trips",
            "category": "MISSING_ONLINE",
        },
    ) == pytest.approx(1 / 9)
    assert (
        gauge(
            "skewless_online_lag_seconds",
            {"feature_service": "ranking", "feature_view": "driver_live", "quantile": "p99"},
        )
        == 0.0
    )


def _ctx_of(client: Client, config: RepoConfig):
    from skewless.registry.registry_store import RegistryStore
    from skewless.server.context import ServerContext
    from skewless.server.registry_holder import RegistryHolder

    holder = RegistryHolder(RegistryStore(config.storage))
    holder.reload()
    return ServerContext(config=config, registry=holder, redis=None)  # type: ignore[arg-type]


def test_report_errors(scenario) -> None:
    config, client, *_ = scenario
    with pytest.raises(InvalidArgumentError) as info:
        client.get_skew_report("")
    assert info.value.reason == "MISSING_FEATURE_SERVICE"
    now = datetime.now(UTC)
    with pytest.raises(InvalidArgumentError) as info:
        client.get_skew_report("ranking", start_time=now, end_time=now - timedelta(hours=1))
    assert info.value.reason == "WINDOW_REVERSED"
    with pytest.raises(InvalidArgumentError) as info:
        client.get_skew_report("ranking", float_tolerance=-1)
    assert info.value.reason == "OUT_OF_RANGE"
    with pytest.raises(InvalidArgumentError) as info:
        client.get_skew_report("ranking", max_examples=101)
    assert info.value.reason == "OUT_OF_RANGE"
    with pytest.raises(NotFoundError) as info:
        client.get_skew_report("x" * 5000)
    assert info.value.reason == "FEATURE_SERVICE_NOT_FOUND" and len(str(info.value)) < 1000
    bad = monitoring_service_pb2.GetSkewReportRequest(feature_service="ranking")
    bad.start_time.seconds = -(10**12)
    with pytest.raises(grpc.RpcError) as raw:
        client._monitoring.GetSkewReport(bad, timeout=10)
    assert raw.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    empty = client.get_skew_report("ranking")  # logging on, nothing served yet
    assert empty.logged_rows == 0 and empty.mismatch_rate == 0
    defs = definitions()
    save_registry(
        config,
        RepoDefinitions(
            feature_views=defs.feature_views,
            feature_services=(FeatureService("quiet", ("driver_stats",)),),
        ),
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            client.get_skew_report("quiet")
        except FailedPreconditionError as exc:
            assert exc.reason == "FEATURE_LOGGING_DISABLED"
            break
        except Exception:
            assert time.monotonic() < deadline
            time.sleep(0.2)
