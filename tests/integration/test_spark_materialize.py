"""Materialization on the Spark engine: key-grouped views, refusals, job records, errors.

The row-local path (a view without SQL) runs the idempotence, never-older and crash
tests of tests/integration/test_materialize.py on both engines; here a view with a
window function partitioned by the key must give the DuckDB engine's history and
online rows, and views the Spark engine cannot split are refused before anything runs.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from skewless.core.errors import DefinitionError, FailedPreconditionError
from skewless.materialization.jobs import JobState, JobStore, Trigger, run_job, start_job
from skewless.materialization.pipeline import materialize
from skewless.server.services.materialization import job_to_proto
from tests.integration.matfixtures import (
    T0,
    VT,
    driver_rows,
    make_config,
    make_registry,
    write_source,
)
from tests.integration.test_materialize import history, online

HOUR = timedelta(hours=1)
#: Key-grouped: each row's change since the driver's previous row (which may lie before
#: the window: the window applies to the view's output, on both engines).
_DELTA_SQL = (
    "SELECT driver_id, ts, created, label, trips, "
    "conv_rate - coalesce(lag(conv_rate) OVER (PARTITION BY driver_id ORDER BY ts), 0) "
    "AS conv_rate FROM source WHERE trips % 5 <> 0"
)
_LEAKS = ("org.apache", "Traceback", "JVM", "py4j", "/tmp", "/work", "at ")


@pytest.fixture
def spark_repo(tmp_path: Path, redis_url: str, spark: Any) -> Any:
    config = make_config(tmp_path / "spark", redis_url, project="on_spark", engine="spark")
    write_source(config, driver_rows())
    return config


def test_key_grouped_view_gives_the_duckdb_rows(
    spark_repo: Any, tmp_path: Path, redis_url: str
) -> None:
    duck = make_config(tmp_path / "duck", redis_url, project="on_duckdb")
    write_source(duck, driver_rows())
    registry = make_registry(sql=_DELTA_SQL)
    start, end = T0 + 12 * HOUR, T0 + 36 * HOUR
    on_duckdb = materialize(duck, registry, start, end)
    on_spark = materialize(spark_repo, registry, start, end)
    assert on_spark.rows_read == on_duckdb.rows_read > 0
    assert history(spark_repo).equals(history(duck))
    # The first row in the window subtracts the driver's row of hour 11, outside it.
    rates = {
        (d, t): r
        for d, t, r in zip(
            history(spark_repo)["driver_id"].to_pylist(),
            history(spark_repo)["event_timestamp"].to_pylist(),
            history(spark_repo)["conv_rate"].to_pylist(),
            strict=True,
        )
    }
    assert rates[(1, T0 + 12 * HOUR)] == 1.0  # 1012 - 1011
    assert online(redis_url, "on_spark") == {
        k.replace(b"on_duckdb:", b"on_spark:"): v for k, v in online(redis_url, "on_duckdb").items()
    }


@pytest.mark.parametrize(
    ("sql", "construct"),
    [
        (
            "SELECT *, lag(conv_rate) OVER (ORDER BY ts) AS prev FROM source",
            "window not partitioned",
        ),
        ("SELECT s.* FROM source AS s JOIN driver_src AS d USING (driver_id)", "JOIN"),
        ("SELECT * FROM source LIMIT 10", "LIMIT"),
        ("SELECT *, random() AS r FROM source", "non-deterministic"),
    ],
)
def test_views_the_spark_engine_cannot_split_are_refused_at_job_start(
    spark_repo: Any, sql: str, construct: str
) -> None:
    registry = make_registry(sql=sql)
    with pytest.raises(FailedPreconditionError) as info:
        start_job(
            spark_repo,
            registry,
            ["driver_stats"],
            window_start=T0,
            window_end=T0 + HOUR,
            incremental=False,
            trigger=Trigger.API,
        )
    assert info.value.reason == "VIEW_NOT_KEY_LOCAL"
    assert construct in info.value.message and "driver_stats" in info.value.message
    assert info.value.metadata["feature_view"] == "driver_stats"
    assert JobStore(spark_repo).list() == []  # nothing recorded, nothing locked
    with pytest.raises(FailedPreconditionError) as direct:
        materialize(spark_repo, registry, T0, T0 + HOUR)
    assert direct.value.reason == "VIEW_NOT_KEY_LOCAL"
    assert history(spark_repo).num_rows == 0


def test_job_record_shows_the_spark_application_and_its_stages(spark_repo: Any, spark: Any) -> None:
    registry = make_registry(sql=_DELTA_SQL)
    started = start_job(
        spark_repo,
        registry,
        ["driver_stats"],
        window_start=T0,
        window_end=T0 + 24 * HOUR,
        incremental=False,
        trigger=Trigger.API,
    )
    store = JobStore(spark_repo)
    record = run_job(spark_repo, registry, store, started.record, locks=started.locks)
    assert record.state == JobState.SUCCEEDED, record.error
    app_id = spark.sparkContext.applicationId
    assert record.spark_application_id == app_id
    assert 0 < record.spark_stages_completed == record.spark_stages_total
    assert 0 < record.spark_tasks_completed == record.spark_tasks_total
    wire = job_to_proto(store.get(record.job_id))
    assert wire.spark.application_id == app_id
    assert wire.spark.stages_completed == record.spark_stages_completed


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * REPLACE (CAST(label AS INTEGER) AS label) FROM source",
        "SELECT * REPLACE (error('bad row ' || label) AS label) FROM source",
    ],
)
def test_sql_failing_on_the_executors_is_the_duckdb_status_without_a_jvm_trace(
    spark_repo: Any, tmp_path: Path, redis_url: str, sql: str
) -> None:
    registry = make_registry(sql=sql, feature_types={"label": VT.VALUE_TYPE_INT64})
    duck = make_config(tmp_path / "duck", redis_url, project="on_duckdb")
    write_source(duck, driver_rows())
    with pytest.raises(DefinitionError) as on_duckdb:
        materialize(duck, registry, T0, T0 + HOUR)
    with pytest.raises(DefinitionError) as info:
        materialize(spark_repo, registry, T0, T0 + HOUR)
    assert info.value.reason == on_duckdb.value.reason
    assert info.value.code == on_duckdb.value.code
    assert "driver-0-0" in info.value.message  # DuckDB's own words
    assert not any(leak in info.value.message for leak in _LEAKS), info.value.message
    assert history(spark_repo).num_rows == 0
