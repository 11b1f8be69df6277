"""`plan`'s warnings for views the Spark engine would refuse at job start."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from skewless.materialization.pipeline import engine_warnings
from tests.integration.matfixtures import make_config, make_registry


def test_spark_engine_warns_for_each_view_it_cannot_split_naming_the_construct(
    tmp_path: Path,
) -> None:
    config = make_config(tmp_path, "redis://127.0.0.1:1/0", engine="spark")
    registry = make_registry(sql="SELECT *, lag(conv_rate) OVER (ORDER BY ts) AS prev FROM source")
    second = registry.feature_views.add()
    second.CopyFrom(registry.feature_views[0])
    second.name = "driver_sample"
    second.sql = "SELECT * FROM source LIMIT 10"
    warnings = engine_warnings(config, registry)
    assert len(warnings) == 2
    limit, window = warnings  # views in name order
    assert "driver_sample" in limit and "LIMIT" in limit
    assert "driver_stats" in window and "window not partitioned" in window


def test_views_the_spark_engine_accepts_and_the_duckdb_engine_give_no_warning(
    tmp_path: Path,
) -> None:
    spark = make_config(tmp_path, "redis://127.0.0.1:1/0", engine="spark")
    grouped = make_registry(
        sql="SELECT *, lag(conv_rate) OVER (PARTITION BY driver_id ORDER BY ts) AS p FROM source"
    )
    assert engine_warnings(spark, grouped) == []
    assert engine_warnings(spark, make_registry()) == []  # no SQL: row-local
    duckdb = dataclasses.replace(spark, offline_engine="duckdb", spark=None)
    refused = make_registry(sql="SELECT * FROM source LIMIT 10")
    assert engine_warnings(duckdb, refused) == []
    assert engine_warnings(spark, refused) != []  # the registry is the same either way
