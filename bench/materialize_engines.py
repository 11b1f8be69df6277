"""Materialization on the DuckDB engine against the Spark engine: same views, same rows.

Runs `materialize` over the `materialize.py` workload (driver and customer views,
`--scale` of 3.5M rows) in one process, alternately on DuckDB and on a Spark local
session (`local[--cores]`), `--repeat` times (A B A B: load from elsewhere hits both),
each run on a fresh data dir and a flushed Redis. With `--key-grouped` the driver view
gets a window function partitioned by its key (the Spark engine's `applyInArrow`
path; without it both views are row-local, `mapInArrow`). Prints the wall time of each
run, the load average, and checks that both engines committed identical history tables
and wrote identical Redis hashes. The Spark session is started (and warmed by one
untimed run) before the timed runs; its start-up is printed separately.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import redis
from workload import MATERIALIZE_END, MATERIALIZE_START, materialize_registry, materialize_views

HERE = Path(__file__).resolve().parent
DATA = HERE / ".data" / "engines"
_LAG = (
    "SELECT * REPLACE (f0 - coalesce(lag(f0) OVER (PARTITION BY driver_id ORDER BY event_ts), 0)"
    " AS f0) FROM source"
)


def _history(config, view: str) -> pa.Table:
    from skewless.offline.offline_store import history_files

    table = pa.concat_tables(pq.read_table(f) for f in history_files(config, view))
    keys = [c for c in table.column_names if c.endswith("_id")]
    return table.sort_by([("event_timestamp", "ascending"), *((k, "ascending") for k in keys)])


def _online(url: str) -> dict[bytes, dict[bytes, bytes]]:
    client = redis.Redis.from_url(url)
    try:
        return {k: client.hgetall(k) for k in client.scan_iter(count=10_000)}
    finally:
        client.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", type=float, default=0.02)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--key-grouped", action="store_true")
    args = parser.parse_args()

    from skewless.core.config import RepoConfig, SparkSettings
    from skewless.materialization.pipeline import materialize
    from skewless.offline.spark_session import spark_session
    from skewless.online.embedded_redis import EmbeddedRedis

    shutil.rmtree(DATA, ignore_errors=True)
    DATA.mkdir(parents=True)
    rows = 0
    for view, table in materialize_views(args.scale).items():
        pq.write_table(table, DATA / f"{view}.parquet")
        rows += table.num_rows
    registry = materialize_registry(DATA)
    if args.key_grouped:
        next(v for v in registry.feature_views if v.name == "driver_stats").sql = _LAG
    spark = SparkSettings(
        master=f"local[{args.cores}]",
        conf=(
            ("spark.sql.shuffle.partitions", str(args.cores)),
            ("spark.ui.enabled", "false"),
            ("spark.ui.showConsoleProgress", "false"),
        ),
    )
    started = time.perf_counter()
    spark_session(spark).sparkContext.setLogLevel("ERROR")
    print(f"spark local[{args.cores}] session start: {time.perf_counter() - started:.1f} s")
    print(
        f"source rows: {rows:,}; views: driver_stats, customer_profile; "
        f"driver view {'key-grouped (lag)' if args.key_grouped else 'row-local'}"
    )
    with EmbeddedRedis(DATA / "redis", persist=False) as server:
        client = redis.Redis.from_url(server.url)
        results: dict[str, list[float]] = {"duckdb": [], "spark": []}
        tables: dict[str, tuple[list[pa.Table], dict]] = {}
        for run in range(args.repeat + 1):  # run 0 warms both up, untimed
            for engine in ("duckdb", "spark"):
                client.flushall()
                root = DATA / f"{engine}-{run}"
                config = RepoConfig(
                    root=root,
                    project="bench",
                    data_dir=root / "data",
                    redis_url=server.url,
                    offline_engine=engine,
                    spark=spark if engine == "spark" else None,
                )
                load = os.getloadavg()[0]
                start = time.perf_counter()
                materialize(config, registry, MATERIALIZE_START, MATERIALIZE_END)
                wall = time.perf_counter() - start
                if run:
                    results[engine].append(wall)
                    print(f"  {engine:6s} run {run}: {wall:6.2f} s  (load average {load:.2f})")
                tables[engine] = (
                    [_history(config, v) for v in ("driver_stats", "customer_profile")],
                    _online(server.url),
                )
                shutil.rmtree(root)
        client.close()
    same_history = all(
        a.equals(b) for a, b in zip(tables["duckdb"][0], tables["spark"][0], strict=True)
    )
    same_online = tables["duckdb"][1] == tables["spark"][1]
    for engine, walls in results.items():
        print(f"{engine}: best {min(walls):.2f} s, runs {', '.join(f'{w:.2f}' for w in walls)}")
    print(f"identical history: {same_history}; identical Redis hashes: {same_online}")
    if not (same_history and same_online):
        sys.exit(1)


if __name__ == "__main__":
    main()
