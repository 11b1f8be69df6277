"""The skew report over N logged rows against an N-row historical retrieval, same history.

The history is the historical benchmark's (`workload.historical_views`: drivers with 10
features and a 2-day TTL, customers with 5 and 7 days). The feature log of the service
`training` holds N logged rows built from the historical entity rows
(`workload.historical_entity_rows`: both keys, 10% unknown): request time = label time,
served values = what the point-in-time join gives, except that every 100th row served a
changed driver `f0` (VALUE_MISMATCH) and every 100th+1 a driver row 6 hours older
(SERVED_STALE). It is written as the server writes it: in request-time order, one file per
100,000 rows (a flush) and UTC day, in the log's own layout.

Each measurement runs in a fresh process (so peak RSS is its own), interleaved, best of
`--repeat`:

* retrieval: the N entity rows read from Parquet (as a `path` retrieval does), then
  `start_retrieval`, read to one `pyarrow.Table`;
* report: `skew_report` of the service over its whole log (read the log, the same join
  at each row's request time, the comparison, counts, lags, examples).

Then both again end to end through one server, best of `--repeat` calls: the Python
client's `get_historical_features` of the N rows (upload, join, stream back, to a Table)
and `get_skew_report`.

Usage:
    .venv/bin/python bench/skew_report.py [--rows 1000000] [--scale 1.0] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from workload import PROJECT, historical_entity_rows, historical_registry, historical_views

from skewless.core.config import RepoConfig
from skewless.offline.feature_log import (
    LOG_META_SCHEMA,
    log_columns,
    log_dir,
    log_files,
    write_log_file,
)
from skewless.offline.offline_store import HistoryWriter, commit_window
from skewless.offline.retrieval import start_retrieval
from skewless.offline.skew import CATEGORY_NAMES, offline_plan, skew_report
from skewless.registry.feature_refs import resolve_feature_service
from skewless.registry.registry_store import RegistryStore
from skewless.v1 import registry_pb2

HERE = Path(__file__).resolve().parent
SERVICE = "training"
STALE_US = 6 * 3600 * 1_000_000
#: Rows per flush of the log (a busy server's flush interval's worth).
FLUSH_ROWS = 100_000


def base_dir(scale: float, rows: int) -> Path:
    return HERE / ".data" / "skew" / f"scale-{scale}-rows-{rows}"


def config_for(base: Path) -> RepoConfig:
    return RepoConfig(root=base, project=PROJECT, data_dir=base / "data", metrics_port=0)


def registry() -> registry_pb2.Registry:
    reg = historical_registry()
    for service in reg.feature_services:
        if service.name == SERVICE:
            service.logging.sample_rate = 1.0
    reg.version = 1
    return reg


def generate(scale: float, rows: int) -> Path:
    base = base_dir(scale, rows)
    config = config_for(base)
    entity_file = base / "entities.parquet"
    if log_dir(config, SERVICE).exists():
        return base
    # Committed to the offline store by its own writer, as `skewless materialize` does.
    for view, table in historical_views(scale).items():
        writer = HistoryWriter(config, view, table.schema)
        for batch in table.to_batches(1_000_000):
            writer.write(batch)
        times = table.column("event_timestamp")
        lo, hi = pc.min(times).as_py(), pc.max(times).as_py()
        commit_window(config, view, lo, hi + timedelta(microseconds=1), writer.close())
    RegistryStore(config.storage).save(registry())
    entities = historical_entity_rows(scale, rows)
    pq.write_table(entities, entity_file)
    reg = RegistryStore(config.storage).require()
    plan = resolve_feature_service(reg, SERVICE, full_feature_names=True)
    join = start_retrieval(
        config,
        offline_plan(plan),
        entities.select(["driver_id", "customer_id", "event_timestamp"]),
        label_time_column="event_timestamp",
        batch_rows=1 << 20,
        entity_columns=False,
    )
    offline = join.reader.read_all()
    join.close()
    n = entities.num_rows
    index = pa.array(range(n), pa.int64())
    mod = pc.subtract(index, pc.multiply(pc.divide(index, 100), 100))
    mismatch, stale = pc.equal(mod, 0), pc.equal(mod, 1)
    columns: dict[str, pa.Array] = {
        "request_id": pc.cast(pc.divide(index, 10), pa.string()),
        "request_time": entities.column("event_timestamp"),
        "registry_version": pa.array([1] * n, pa.int64()),
        "driver_id": entities.column("driver_id"),
        "customer_id": entities.column("customer_id"),
    }
    for c in log_columns(plan):
        f = c.feature
        ts = offline.column(f"__offline_ts__{f.view}")
        value = offline.column(f.output_name)
        if f.view == "driver_stats":
            ts_us = pc.cast(ts, pa.int64())
            ts = pc.cast(pc.if_else(stale, pc.subtract(ts_us, STALE_US), ts_us), ts.type)
            if f.name == "f0":
                value = pc.if_else(mismatch, pc.add(value, pa.scalar(1, value.type)), value)
        status = pc.if_else(
            pc.is_valid(ts), pc.if_else(pc.is_valid(value), "PRESENT", "NULL_VALUE"), "NOT_FOUND"
        )
        columns[c.value] = value
        columns[c.status] = status
        columns[c.event_time] = ts
    table = pa.table(columns)
    assert table.schema.names[: len(LOG_META_SCHEMA)] == LOG_META_SCHEMA.names
    # As the server writes it: in request-time order, one file per flush (and day).
    table = table.take(pc.sort_indices(table.column("request_time")))
    for start in range(0, n, FLUSH_ROWS):
        write_log_file(config, SERVICE, table.slice(start, FLUSH_ROWS))
    return base


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(kind: str, base: Path) -> None:
    config = config_for(base)
    reg = RegistryStore(config.storage).require()
    started, cpu = time.perf_counter(), time.process_time()
    out: dict[str, object] = {}
    if kind == "retrieval":
        # As a retrieval whose entity rows are a `path` the server reads: read, then join.
        entities = pq.read_table(base / "entities.parquet")
        plan = resolve_feature_service(reg, SERVICE, full_feature_names=True)
        join = start_retrieval(
            config, plan, entities, label_time_column="event_timestamp", batch_rows=65_536
        )
        result = join.reader.read_all()
        join.close()
        out["rows"] = result.num_rows
    else:
        report = skew_report(config, reg, SERVICE)
        out["rows"] = report.logged_rows
        out["categories"] = {
            CATEGORY_NAMES[c.category]: c.count
            for f in report.features
            if f.feature_view == "driver_stats" and f.feature == "f0"
            for c in f.categories
        }
        out["mismatch_rate"] = report.mismatch_rate
    out["wall_s"] = time.perf_counter() - started
    out["cpu_s"] = time.process_time() - cpu
    out["peak_rss_mb"] = _peak_mb()
    print(json.dumps(out))


def serve(base: Path) -> None:
    """A server over the benchmark's repository, until a line arrives on stdin."""
    import asyncio
    import dataclasses

    from skewless.server.app import create_server

    # Neither RPC measured here reads Redis; the client is created lazily, never used.
    config = dataclasses.replace(
        config_for(base), redis_url="redis://127.0.0.1:9", server_port=0, metrics_port=0
    )

    async def main() -> None:
        server, port = create_server(config, run_schedules=False)
        await server.start()
        print(f"PORT {port}", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        await server.stop(0.5)

    asyncio.run(main())


def end_to_end(base: Path, repeat: int) -> dict[str, float]:
    """Best wall time of each call through a fresh server: the retrieval, then the report."""
    from skewless.client import Client

    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(base)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdin is not None
    port = int(proc.stdout.readline().split()[1])
    entities = pq.read_table(base / "entities.parquet")
    best = {"retrieval": float("inf"), "report": float("inf")}
    try:
        with Client(f"127.0.0.1:{port}", timeout=600) as client:
            for _ in range(repeat):
                t = time.perf_counter()
                table = client.get_historical_features(
                    entities, feature_service=SERVICE, full_feature_names=True
                )
                best["retrieval"] = min(best["retrieval"], time.perf_counter() - t)
                assert table.num_rows == entities.num_rows
                del table
                t = time.perf_counter()
                report = client.get_skew_report(SERVICE)
                best["report"] = min(best["report"], time.perf_counter() - t)
                assert report.logged_rows == entities.num_rows
    finally:
        proc.stdin.write("\n")
        proc.stdin.close()
        proc.wait(60)
    return best


def run_child(kind: str, base: Path) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", kind, str(base)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], Path(args.child[1]))
        return
    if args.serve:
        serve(Path(args.serve))
        return
    t = time.perf_counter()
    base = generate(args.scale, args.rows)
    files = len(log_files(config_for(base), SERVICE))
    print(
        f"history, entity rows and a {args.rows:,}-row log ({files} files) ready in "
        f"{time.perf_counter() - t:.1f}s"
    )
    load = os.getloadavg()
    retrievals, reports = [], []
    for _ in range(args.repeat):
        retrievals.append(run_child("retrieval", base))
        reports.append(run_child("report", base))
    best_r = min(retrievals, key=lambda r: r["wall_s"])
    best_s = min(reports, key=lambda r: r["wall_s"])
    after = os.getloadavg()[0]
    print(f"load average before/after: {load[0]:.2f} / {after:.2f} ({os.cpu_count()} cores)")
    print("| run | rows | wall s | CPU s | peak RSS MB |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, r in (("historical retrieval", best_r), ("skew report", best_s)):
        print(
            f"| {name} | {r['rows']:,} | {r['wall_s']:.2f} | {r['cpu_s']:.2f} | "
            f"{r['peak_rss_mb']:.0f} |"
        )
    wall = best_s["wall_s"] / best_r["wall_s"]
    cpu = best_s["cpu_s"] / best_r["cpu_s"]
    print(f"report / retrieval: wall {wall:.2f}x, CPU {cpu:.2f}x (target: at most 1.5x)")
    print(f"driver_stats:f0 categories: {best_s['categories']}")
    e2e = end_to_end(base, args.repeat)
    print(
        f"end to end through one server (client call to Table / to the report), best of "
        f"{args.repeat}: retrieval {e2e['retrieval']:.2f} s, report {e2e['report']:.2f} s, "
        f"{e2e['report'] / e2e['retrieval']:.2f}x; load average now {os.getloadavg()[0]:.2f}"
    )


if __name__ == "__main__":
    main()
