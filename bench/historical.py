"""Historical retrieval benchmark: skewless end to end vs the bare DuckDB query.

Generates the issue's workload into bench/.data/historical/ (driver history 100,000
drivers x 30 event times = 3,000,000 rows x 10 features, TTL 2 days; customer history
50,000 x 10 = 500,000 rows x 5 features, TTL 7 days; entity rows with both keys, a
label time and a label), then measures in one run, each side in its own processes:

* skewless: a real server (child process, its own Redis) and a client process calling
  `get_historical_features` until the `pyarrow.Table` is complete in the client; the
  server's and the client's peak RSS;
* bare DuckDB: one process, no skewless code, running the same exact semantics
  (tie-break dedupe, ASOF LEFT JOIN per view with the TTL bound, input order restored)
  on the same files into an Arrow table.

With `--s3`, the same skewless call is also run against a server whose data dir is on a
real S3-compatible server (SeaweedFS `weed` on loopback, started by the script; the offline
store is uploaded to it once), interleaved with the local runs, and both are reported.

Both results are compared (row count and a checksum of every feature column). Each of
those is a first call in a fresh process; with `--calls N` (default 3) the script also
times N calls on one server and N runs in one bare process and prints the steady state
(the best call after the first), since a server runs many retrievals.

With `--feast`, also Feast 0.67's `get_historical_features(...).to_arrow()` with its
file offline store and its DuckDB offline store (`--feast-stores`), each in a child
process of the Feast venv (`bench/.venv-feast`, see bench/README.md; the DuckDB store
needs `feast[duckdb]`) over the same Parquet history and entity rows, on
`--feast-rows` entity rows (default 100,000); skewless and bare DuckDB are then also
run on those rows, for a like-for-like ratio. Usage:

    .venv/bin/python bench/historical.py [--scale 1.0] [--rows 1000000] [--repeat 1]
        [--calls 3] [--s3] [--feast [--feast-rows 100000] [--feast-stores file,duckdb]]

With `--engine spark` it compares the offline engines instead: one server on DuckDB and
one per `--spark-cores` (Spark local[N] in the server process), `--calls` calls each;
the first call's tables must be identical row for row (`pa.Table.equals`: every row in
order, every column, type and null), and it prints wall time and the CPU time of the
server's whole process tree (the JVM and Spark's Python workers included).

    .venv/bin/python bench/historical.py --engine spark [--rows 1000000] [--spark-cores 1,2]
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import resource
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from workload import (
    CUSTOMER_TIMES,
    CUSTOMER_TTL,
    CUSTOMERS,
    DRIVER_TIMES,
    DRIVER_TTL,
    DRIVERS,
    copy_feast_repo,
    historical_entity_rows,
    historical_registry,
    historical_views,
)
from workload import HISTORICAL_FEATURES as FEATURES

HERE = Path(__file__).resolve().parent
ROOT = HERE / ".data" / "historical"


def data_dir(scale: float) -> Path:
    return ROOT / f"scale-{scale}"


def entity_path(scale: float, rows: int) -> Path:
    return data_dir(scale) / f"entities-{rows}.parquet"


def generate(scale: float, rows: int) -> None:
    """Writes the histories, and commits them to the offline store, and the entity rows, once.

    Each view's history is one Parquet file `data/history/<view>/part-0.parquet` (what Feast
    and the bare DuckDB query read) committed to skewless's offline store by its own writer
    as one materialized window (day files and a commit, as `skewless materialize` leaves).
    """
    from skewless.core.config import RepoConfig
    from skewless.offline.offline_store import HistoryWriter, commit_window

    loose = data_dir(scale) / "data" / "history"
    offline = data_dir(scale) / "data" / "offline"
    config = RepoConfig(
        root=data_dir(scale), project="bench", data_dir=data_dir(scale) / "data", server_port=0
    )
    if not (offline / "customer_stats").exists():
        for view, table in historical_views(scale).items():
            folder = loose / view
            folder.mkdir(parents=True, exist_ok=True)
            pq.write_table(table, folder / "part-0.parquet", row_group_size=256_000)
            writer = HistoryWriter(config, view, table.schema)
            for batch in pq.ParquetFile(folder / "part-0.parquet").iter_batches(1_000_000):
                writer.write(batch)
            times = table.column("event_timestamp")
            lo, hi = pc.min(times).as_py(), pc.max(times).as_py()
            commit_window(config, view, lo, hi + timedelta(microseconds=1), writer.close())
    path = entity_path(scale, rows)
    if not path.exists():
        pq.write_table(historical_entity_rows(scale, rows), path)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _checksum(table: pa.Table, columns: list[str]) -> dict[str, float]:
    out = {}
    for name in columns:
        col = table[name]
        out[name] = round(float(pc.sum(pc.cast(col, pa.float64())).as_py() or 0.0), 3)
        out[name + ":nulls"] = col.null_count
    return out


# --------------------------------------------------------------------------- children


def child_serve(scale: float, engine: str = "duckdb", cores: int = 2) -> None:
    import asyncio

    from skewless.core.config import RepoConfig, SparkSettings
    from skewless.online.embedded_redis import EmbeddedRedis
    from skewless.registry.registry_store import RegistryStore
    from skewless.server.app import create_server

    base = data_dir(scale)
    redis = EmbeddedRedis(base / "redis", persist=False).start()
    config = RepoConfig(
        root=base,
        project="bench",
        data_dir=base / "data",
        redis_url=redis.url,
        server_port=0,
        metrics_port=0,
        offline_engine=engine,
        spark=SparkSettings(
            master=f"local[{cores}]",
            conf=(
                ("spark.driver.memory", "8g"),
                ("spark.sql.shuffle.partitions", str(2 * cores)),
                ("spark.ui.enabled", "false"),
                ("spark.ui.showConsoleProgress", "false"),
            ),
        ),
    )
    s3 = os.environ.get(_S3_ENV)
    if s3:  # the data dir on the S3 server `--s3` started
        from skewless.core.storage import ObjectStoreSettings

        where = json.loads(s3)
        config = dataclasses.replace(
            config,
            data_dir=base / "local-s3",
            data_url=where["data_url"],
            object_store=ObjectStoreSettings(
                endpoint_url=where["endpoint_url"],
                access_key_id=where["access_key"],
                secret_access_key=where["secret_key"],
            ),
        )
    RegistryStore(config.storage).save(historical_registry())

    async def main() -> None:
        server, port = create_server(config)
        await server.start()
        cpu0 = time.process_time()
        print(f"PORT {port}", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        cpu = time.process_time() - cpu0
        print(json.dumps({"server_peak_rss_mb": _peak_rss_mb(), "server_cpu_s": cpu}), flush=True)
        await server.stop(0.5)
        del server  # collect the grpc server while its event loop still runs
        gc.collect()

    try:
        asyncio.run(main())
    finally:
        redis.stop()


def child_client(
    scale: float, rows: int, port: int, calls: int = 1, save: str | None = None
) -> None:
    """Times `calls` retrievals on one server; the figures are the first call's.

    With `save`, the first call's table is written there (Arrow IPC) for a row-by-row
    comparison between engines.
    """
    import grpc

    from skewless.client.historical import get_historical_features

    entities = pq.read_table(entity_path(scale, rows))
    options = [("grpc.max_receive_message_length", 64 * 1024 * 1024)]
    channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=options)
    grpc.channel_ready_future(channel).result(timeout=10)
    rss0 = _peak_rss_mb()
    walls, result = [], {}
    for call in range(calls):
        cpu0 = time.process_time()
        start = time.perf_counter()
        table = get_historical_features(
            channel, entities, feature_service="training", full_feature_names=True
        )
        walls.append(time.perf_counter() - start)
        if call == 0:
            result = {
                "wall_s": walls[0],
                "client_cpu_s": time.process_time() - cpu0,
                "rows": table.num_rows,
                "client_peak_rss_mb": _peak_rss_mb(),
                "client_rss_before_mb": rss0,
                "checksum": _checksum(table, FEATURES),
            }
            if save:
                with pa.ipc.new_file(save, table.schema) as sink:
                    sink.write_table(table)
        del table
    print(json.dumps({**result, "walls": walls}))


BARE_SQL = """
WITH e AS (
    SELECT row_number() OVER () - 1 AS __row, * FROM read_parquet($entities)
),
d AS (
    SELECT driver_id, event_timestamp AS ts, {driver_cols}
    FROM read_parquet($driver, filename = true, file_row_number = true)
    WHERE event_timestamp <= $hi AND event_timestamp >= $lo_d
    QUALIFY row_number() OVER (
        PARTITION BY driver_id, event_timestamp
        ORDER BY created_timestamp DESC NULLS LAST, filename DESC, file_row_number DESC) = 1
),
c AS (
    SELECT customer_id, event_timestamp AS ts, {customer_cols}
    FROM read_parquet($customer, filename = true, file_row_number = true)
    WHERE event_timestamp <= $hi AND event_timestamp >= $lo_c
    QUALIFY row_number() OVER (
        PARTITION BY customer_id, event_timestamp
        ORDER BY created_timestamp DESC NULLS LAST, filename DESC, file_row_number DESC) = 1
)
SELECT e.* EXCLUDE (__row), {select}
FROM e
ASOF LEFT JOIN d ON e.driver_id = d.driver_id AND e.event_timestamp >= d.ts
ASOF LEFT JOIN c ON e.customer_id = c.customer_id AND e.event_timestamp >= c.ts
ORDER BY e.__row
"""


# The same query without the tie-break step: exact on this data only because no two
# history rows share a key and an event time (skewless checks that per request).
BARE_SQL_NO_TIES = (
    BARE_SQL.replace(", filename = true, file_row_number = true", "")
    .replace(
        "    QUALIFY row_number() OVER (\n        PARTITION BY driver_id, event_timestamp\n"
        "        ORDER BY created_timestamp DESC NULLS LAST, filename DESC, file_row_number DESC)"
        " = 1\n",
        "",
    )
    .replace(
        "    QUALIFY row_number() OVER (\n        PARTITION BY customer_id, event_timestamp\n"
        "        ORDER BY created_timestamp DESC NULLS LAST, filename DESC, file_row_number DESC)"
        " = 1\n",
        "",
    )
)


def child_bare(scale: float, rows: int, ties: bool = True, calls: int = 1) -> None:
    """Runs the bare query `calls` times in this process; the figures are the first run's."""
    walls, result = [], {}
    for call in range(calls):
        run = _bare_once(scale, rows, ties)
        walls.append(run["wall_s"])
        if call == 0:
            result = run
    print(json.dumps({**result, "walls": walls}))


def _bare_once(scale: float, rows: int, ties: bool) -> dict:
    import duckdb

    base = data_dir(scale) / "data" / "history"
    driver_cols = ", ".join(f"f{i} AS driver_stats__f{i}" for i in range(10))
    customer_cols = ", ".join(f"f{i} AS customer_stats__f{i}" for i in range(5))
    select = ", ".join(
        [
            f"CASE WHEN d.ts >= e.event_timestamp - INTERVAL {DRIVER_TTL.days} DAY "
            f"THEN d.driver_stats__f{i} END "
            f"AS driver_stats__f{i}"
            for i in range(10)
        ]
        + [
            f"CASE WHEN c.ts >= e.event_timestamp - INTERVAL {CUSTOMER_TTL.days} DAY "
            f"THEN c.customer_stats__f{i} END AS customer_stats__f{i}"
            for i in range(5)
        ]
    )
    template = BARE_SQL if ties else BARE_SQL_NO_TIES
    sql = template.format(driver_cols=driver_cols, customer_cols=customer_cols, select=select)
    start = time.perf_counter()
    cpu0 = time.process_time()
    con = duckdb.connect()
    path = str(entity_path(scale, rows))
    lo_us, hi_us = con.sql(
        "SELECT epoch_us(min(event_timestamp)), epoch_us(max(event_timestamp)) "
        "FROM read_parquet($p)",
        params={"p": path},
    ).fetchall()[0]
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    lo, hi = epoch + timedelta(microseconds=lo_us), epoch + timedelta(microseconds=hi_us)
    relation = con.sql(
        sql,
        params={
            "entities": path,
            "driver": [str(p) for p in sorted((base / "driver_stats").rglob("*.parquet"))],
            "customer": [str(p) for p in sorted((base / "customer_stats").rglob("*.parquet"))],
            "hi": hi,
            "lo_d": lo - DRIVER_TTL,
            "lo_c": lo - CUSTOMER_TTL,
        },
    )
    table = relation.to_arrow_table()
    wall = time.perf_counter() - start
    cpu = time.process_time() - cpu0
    con.close()
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "rows": table.num_rows,
        "peak_rss_mb": _peak_rss_mb(),
        "checksum": _checksum(table, FEATURES),
    }


# --------------------------------------------------------------------------- Feast

FEAST_PYTHON = HERE / ".venv-feast" / "bin" / "python"


def run_feast(
    python: str, scale: float, rows: int, store: str, timeout: float, max_gb: float = 0.0
) -> dict:
    """Feast in a child of its venv; `max_gb` caps its address space (a MemoryError then).

    The repository is a copy of bench/feast/historical with this offline `store`, over
    the very history files skewless reads (linked into its data/); `feast apply` runs
    first, then bench/feast/run_historical.py times the retrieval.
    """
    offline = data_dir(scale) / "data" / "history"
    repo = copy_feast_repo(
        "historical", data_dir(scale) / f"feast_repo_{store}", offline_store=store
    )
    for view in ("driver_stats", "customer_stats"):
        parts = list((offline / view).rglob("*.parquet"))
        if parts != [offline / view / "part-0.parquet"]:
            raise SystemExit(f"expected exactly part-0.parquet under {offline / view}")
        (repo / "data" / f"{view}.parquet").symlink_to(parts[0])
    apply = [str(Path(python).parent / "feast"), "apply"]
    runner = HERE / "feast" / "run_historical.py"
    args = [python, str(runner), str(repo), str(entity_path(scale, rows))]

    def cap() -> None:
        limit = int(max_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    try:
        proc = subprocess.run(apply, capture_output=True, text=True, cwd=repo, timeout=timeout)
        if not proc.returncode:
            proc = subprocess.run(
                args,
                capture_output=True,
                text=True,
                cwd=repo,
                timeout=timeout,
                preexec_fn=cap if max_gb else None,
            )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f}s"}
    if proc.returncode:
        return {"error": proc.stderr.strip().splitlines()[-1][:300] if proc.stderr else "failed"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _same(a: dict, b: dict) -> bool:
    """Row count and per-feature null counts equal, sums within float rounding."""
    if a["rows"] != b["rows"] or a["checksum"].keys() != b["checksum"].keys():
        return False
    for key, x in a["checksum"].items():
        y = b["checksum"][key]
        if key.endswith(":nulls") and x != y:
            return False
        if abs(x - y) > 1e-6 * max(1.0, abs(x), abs(y)):
            return False
    return True


def report_feast(args: argparse.Namespace, ours: dict, bare: dict, feast: dict) -> None:
    rows = args.feast_rows
    print(f"\nFeast 0.67 comparison on {rows:,} entity rows (same history files, same rows)")
    print(f"{'measure':<44}{'wall s':>9}{'CPU s':>9}{'peak RSS MB':>13}  rows / same result")
    ours_cpu = ours["client_cpu_s"] + ours["server_cpu_s"]
    print(
        f"{'skewless end to end':<44}{ours['wall_s']:>9.2f}{ours_cpu:>9.2f}"
        f"{ours['client_peak_rss_mb']:>13.0f}  {ours['rows']:,} (client; server "
        f"{ours['server_peak_rss_mb']:.0f} MB)"
    )
    print(
        f"{'bare DuckDB ASOF query':<44}{bare['wall_s']:>9.2f}{bare['cpu_s']:>9.2f}"
        f"{bare['peak_rss_mb']:>13.0f}  {bare['rows']:,} / {_same(bare, ours)}"
    )
    for store, r in feast.items():
        label = f"Feast get_historical_features ({store} store)"
        if "error" in r:
            print(f"{label:<44}  failed: {r['error']}")
            continue
        print(
            f"{label:<44}{r['wall_s']:>9.2f}{r['cpu_s']:>9.2f}{r['peak_rss_mb']:>13.0f}"
            f"  {r['rows']:,} / {_same(r, ours)}"
        )
    for store, r in feast.items():
        if "error" not in r:
            speedup = r["wall_s"] / ours["wall_s"]
            met = "met" if speedup >= 20 else "NOT met"
            print(
                f"Feast ({store}) / skewless wall: {speedup:.1f}x, CPU "
                f"{r['cpu_s'] / ours_cpu:.1f}x (target >= 20x: {met})"
            )
    for store, r in feast.items():
        if "error" not in r and not _same(r, ours):
            nulls = {
                k: (r["checksum"].get(k), v) for k, v in ours["checksum"].items() if ":nulls" in k
            }
            sums = [
                k
                for k, v in ours["checksum"].items()
                if ":nulls" not in k and abs(r["checksum"].get(k, 0) - v) > 1e-6 * max(1, abs(v))
            ]
            print(
                f"Feast ({store}) differs from skewless: {r['rows']:,} rows vs {ours['rows']:,}; "
                f"null counts (Feast, skewless) {sorted(set(nulls.values()))}; "
                f"feature sums that differ: {sums or 'none'}"
            )


# --------------------------------------------------------------------------- driver


def _run_json(args: list[str]) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"{args[0]} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_skewless(scale: float, rows: int, calls: int = 1, s3: dict | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != _S3_ENV}
    if s3 is not None:
        env[_S3_ENV] = json.dumps(s3)
    server = subprocess.Popen(
        [sys.executable, __file__, "_serve", str(scale)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert server.stdout is not None and server.stdin is not None
    try:
        line = server.stdout.readline()
        port = int(line.split()[1])
        result = _run_json(["_client", str(scale), str(rows), str(port), str(calls)])
        server.stdin.write("\n")
        server.stdin.flush()
        result.update(json.loads(server.stdout.readline()))
    finally:
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    return result


_S3_ENV = "SKEWLESS_BENCH_S3"


def run_s3(args: argparse.Namespace) -> None:
    """Local vs s3:// data dir, interleaved runs of the same call (`--s3`)."""
    import pyarrow.fs as pafs

    sys.path.insert(0, str(HERE.parent))
    from tests.helpers.s3 import running_s3_server

    with running_s3_server(HERE / ".data" / "s3-weed") as server:
        prefix = f"bench-{args.scale}"
        source = data_dir(args.scale) / "data" / "offline"
        t = time.perf_counter()
        pafs.copy_files(
            str(source),
            f"{server.bucket}/{prefix}/offline",
            source_filesystem=pafs.LocalFileSystem(),
            destination_filesystem=server.filesystem(),
        )
        print(f"offline store uploaded to the S3 server in {time.perf_counter() - t:.1f}s")
        where = {
            "data_url": server.uri(prefix),
            "endpoint_url": server.endpoint_url,
            "access_key": server.access_key,
            "secret_key": server.secret_key,
        }
        runs: dict[str, list[dict]] = {"local": [], "s3": []}
        for _ in range(args.repeat):
            runs["local"].append(run_skewless(args.scale, args.rows))
            runs["s3"].append(run_skewless(args.scale, args.rows, s3=where))
    load = os.getloadavg()
    print(
        f"\nlocal vs s3:// data dir, {args.rows:,} entity rows, {args.repeat} interleaved "
        f"run(s) each, first call per fresh server; load average {load[0]:.1f} on "
        f"{os.cpu_count()} cores"
    )
    print(f"{'data dir':<12}{'wall s':>9}{'CPU s':>9}{'server CPU s':>14}{'server RSS MB':>15}")
    best = {}
    for kind, results in runs.items():
        r = min(results, key=lambda x: x["client_cpu_s"] + x["server_cpu_s"])
        best[kind] = r
        cpu = r["client_cpu_s"] + r["server_cpu_s"]
        print(
            f"{kind:<12}{min(x['wall_s'] for x in results):>9.2f}{cpu:>9.2f}"
            f"{r['server_cpu_s']:>14.2f}{r['server_peak_rss_mb']:>15.0f}"
        )
    same = best["local"]["checksum"] == best["s3"]["checksum"]
    print(f"results identical (rows + per-feature sums and null counts): {same}")


def _tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) of a process and all its descendants, reaped or not."""
    ticks = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        parents[int(entry.name)] = int(fields[1])
        # utime, stime, cutime, cstime (children already reaped count in c*)
        times[int(entry.name)] = sum(int(v) for v in fields[11:15]) / ticks
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        total += times.get(current, 0.0)
        todo.extend(p for p, parent in parents.items() if parent == current)
    return total


def run_engine(scale: float, rows: int, engine: str, cores: int, calls: int, save: Path) -> dict:
    """One server on `engine` (Spark: `local[cores]`); `calls` client processes in turn.

    Per call: wall time in the client, CPU of the client and of the server's whole
    process tree (for Spark: the JVM and its Python workers too). The first call's table
    is saved to `save` for the row-by-row comparison.
    """
    server = subprocess.Popen(
        [sys.executable, __file__, "_serve", str(scale), engine, str(cores)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None and server.stdin is not None
    out: dict = {"engine": engine, "cores": cores, "calls": []}
    try:
        port = int(server.stdout.readline().split()[1])
        for call in range(calls):
            cpu0 = _tree_cpu(server.pid)
            args = ["_client", str(scale), str(rows), str(port), "1"]
            result = _run_json([*args, str(save)] if call == 0 else args)
            result["server_tree_cpu_s"] = _tree_cpu(server.pid) - cpu0
            out["calls"].append(result)
        server.stdin.write("\n")
        server.stdin.flush()
        server.stdout.readline()
    finally:
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    return out


def compare_engines(args: argparse.Namespace) -> None:
    """DuckDB and Spark (local, each core count) on the same data, row for row."""
    folder = data_dir(args.scale) / "engines"
    folder.mkdir(parents=True, exist_ok=True)
    runs = [("duckdb", 2)] + [("spark", int(c)) for c in args.spark_cores.split(",")]
    results = []
    for engine, cores in runs:
        save = folder / f"{engine}-{cores}-{args.rows}.arrow"
        results.append((run_engine(args.scale, args.rows, engine, cores, args.calls, save), save))
    reference = pa.ipc.open_file(pa.memory_map(str(results[0][1]))).read_all()
    load = os.getloadavg()
    print(
        f"\nengines on {args.rows:,} entity rows; {os.cpu_count()} cores; load average "
        f"{load[0]:.1f} / {load[1]:.1f} (1 / 5 min) at the end"
    )
    print(
        f"{'engine':<18}{'call':>5}{'wall s':>9}{'server CPU s':>14}{'client CPU s':>14}"
        f"{'identical':>11}"
    )
    for run, save in results:
        table = pa.ipc.open_file(pa.memory_map(str(save))).read_all()
        same = table.equals(reference)  # every row, in order, every column and type
        label = "duckdb" if run["engine"] == "duckdb" else f"spark local[{run['cores']}]"
        for i, call in enumerate(run["calls"]):
            print(
                f"{label:<18}{i + 1:>5}{call['wall_s']:>9.2f}{call['server_tree_cpu_s']:>14.2f}"
                f"{call['client_cpu_s']:>14.2f}{str(same) if i == 0 else '':>11}"
            )
        del table
    steady = {
        (run["engine"], run["cores"]): min(c["wall_s"] for c in run["calls"][1:] or run["calls"])
        for run, _ in results
    }
    cpu = {
        (run["engine"], run["cores"]): min(
            c["server_tree_cpu_s"] for c in run["calls"][1:] or run["calls"]
        )
        for run, _ in results
    }
    duck = ("duckdb", 2)
    for key in steady:
        if key != duck:
            print(
                f"spark local[{key[1]}] / duckdb (best call after the first): wall "
                f"{steady[key] / steady[duck]:.2f}x, server CPU {cpu[key] / cpu[duck]:.2f}x"
            )
    cores = sorted(k[1] for k in steady if k[0] == "spark")
    if len(cores) > 1:
        lo, hi = ("spark", cores[0]), ("spark", cores[-1])
        print(
            f"spark scaling local[{cores[0]}] -> local[{cores[-1]}]: wall "
            f"{steady[lo] / steady[hi]:.2f}x faster"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument(
        "--calls",
        type=int,
        default=3,
        help="also time this many calls on one server (and runs in one bare process); "
        "the steady state is the best call after the first; 1 skips it",
    )
    parser.add_argument(
        "--s3",
        action="store_true",
        help="only compare a local data dir with one on an S3 server (SeaweedFS on loopback)",
    )
    parser.add_argument(
        "--engine",
        choices=("duckdb", "spark"),
        default="duckdb",
        help="spark: compare the Spark engine (local, --spark-cores) with DuckDB, row for row",
    )
    parser.add_argument("--spark-cores", default="1,2", help="local[N] sessions to run")
    parser.add_argument("--feast", action="store_true", help="also run Feast 0.67")
    parser.add_argument("--feast-rows", type=int, default=100_000)
    parser.add_argument("--feast-stores", default="file,duckdb")
    parser.add_argument("--feast-python", default=str(FEAST_PYTHON))
    parser.add_argument("--feast-timeout", type=float, default=1800.0)
    parser.add_argument(
        "--feast-max-gb",
        type=float,
        default=0.0,
        help="cap Feast's address space (GB); its file store needs ~13 GB RSS at 1M rows",
    )
    args = parser.parse_args()
    # absolute, not resolved: the venv's python is a symlink; Feast runs in its repo's folder
    args.feast_python = str(Path(args.feast_python).absolute())
    t = time.perf_counter()
    generate(args.scale, args.rows)
    if args.feast:
        if not Path(args.feast_python).exists():
            raise SystemExit(f"no Feast venv at {args.feast_python}; see bench/README.md")
        generate(args.scale, args.feast_rows)
    print(f"data ready in {time.perf_counter() - t:.1f}s under {data_dir(args.scale)}")
    if args.s3:
        run_s3(args)
        return
    if args.engine == "spark":
        compare_engines(args)
        return
    ours, bare, bare_nt = [], [], []
    for _ in range(args.repeat):
        bare.append(_run_json(["_bare", str(args.scale), str(args.rows)]))
        bare_nt.append(_run_json(["_bare_no_ties", str(args.scale), str(args.rows)]))
        ours.append(run_skewless(args.scale, args.rows))
    best_ours = min(ours, key=lambda r: r["wall_s"])
    best_bare = min(bare, key=lambda r: r["wall_s"])
    best_nt = min(bare_nt, key=lambda r: r["wall_s"])
    same = all(
        r["checksum"] == best_ours["checksum"] and r["rows"] == best_ours["rows"]
        for r in (best_bare, best_nt)
    )
    histories = (
        f"driver {int(DRIVERS * args.scale) * DRIVER_TIMES:,} x 10, "
        f"customer {int(CUSTOMERS * args.scale) * CUSTOMER_TIMES:,} x 5"
    )
    print(f"\nworkload: {histories}; {args.rows:,} entity rows; {os.cpu_count()} cores")
    ours_cpu = best_ours["client_cpu_s"] + best_ours["server_cpu_s"]
    print(f"{'measure':<44}{'wall s':>9}{'CPU s':>9}{'peak RSS MB':>13}")
    print(
        f"{'skewless end to end (client -> pa.Table)':<44}{best_ours['wall_s']:>9.2f}"
        f"{ours_cpu:>9.2f}{best_ours['client_peak_rss_mb']:>13.0f}  (client)"
    )
    print(
        f"{'  of which server process':<44}{'':>9}{best_ours['server_cpu_s']:>9.2f}"
        f"{best_ours['server_peak_rss_mb']:>13.0f}  (server)"
    )
    print(
        f"{'bare DuckDB ASOF query (one process)':<44}{best_bare['wall_s']:>9.2f}"
        f"{best_bare['cpu_s']:>9.2f}{best_bare['peak_rss_mb']:>13.0f}"
    )
    print(
        f"{'bare DuckDB, no tie step (exact: no ties)':<44}{best_nt['wall_s']:>9.2f}"
        f"{best_nt['cpu_s']:>9.2f}{best_nt['peak_rss_mb']:>13.0f}"
    )
    print(
        f"ratio skewless / bare DuckDB: wall {best_ours['wall_s'] / best_bare['wall_s']:.2f}x, "
        f"CPU {ours_cpu / best_bare['cpu_s']:.2f}x (CPU is the steadier figure on a shared host)"
    )
    print(
        f"ratio skewless / bare DuckDB without the tie step: wall "
        f"{best_ours['wall_s'] / best_nt['wall_s']:.2f}x, CPU {ours_cpu / best_nt['cpu_s']:.2f}x"
    )
    print(f"results identical (rows + per-feature sums and null counts): {same}")
    if args.calls > 1:
        steady_ours = min(run_skewless(args.scale, args.rows, args.calls)["walls"][1:])
        steady = {
            kind: min(
                _run_json([kind, str(args.scale), str(args.rows), str(args.calls)])["walls"][1:]
            )
            for kind in ("_bare", "_bare_no_ties")
        }
        print(
            f"steady state (best of calls 2..{args.calls} on one server / in one process), "
            f"wall s: skewless {steady_ours:.2f}, bare {steady['_bare']:.2f} "
            f"({steady_ours / steady['_bare']:.2f}x), bare without the tie step "
            f"{steady['_bare_no_ties']:.2f} ({steady_ours / steady['_bare_no_ties']:.2f}x)"
        )
    if not same:
        print("ours:", best_ours["checksum"], "\nbare:", best_bare["checksum"])
    if args.feast:
        if args.feast_rows == args.rows:
            f_ours, f_bare = best_ours, best_bare
        else:  # skewless and bare DuckDB on Feast's entity rows, for a like-for-like ratio
            f_ours = min(
                (run_skewless(args.scale, args.feast_rows) for _ in range(args.repeat)),
                key=lambda r: r["wall_s"],
            )
            f_bare = _run_json(["_bare", str(args.scale), str(args.feast_rows)])
        feast = {
            store: run_feast(
                args.feast_python,
                args.scale,
                args.feast_rows,
                store,
                args.feast_timeout,
                args.feast_max_gb,
            )
            for store in args.feast_stores.split(",")
        }
        report_feast(args, f_ours, f_bare, feast)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_serve":
        child_serve(float(sys.argv[2]), *(sys.argv[3:4]), *(int(c) for c in sys.argv[4:5]))
    elif len(sys.argv) > 1 and sys.argv[1] == "_client":
        save = sys.argv[6] if len(sys.argv) > 6 else None
        child_client(float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), save)
    elif len(sys.argv) > 1 and sys.argv[1] in ("_bare", "_bare_no_ties"):
        calls = int(sys.argv[4]) if len(sys.argv) > 4 else 1
        ties = sys.argv[1] == "_bare"
        child_bare(float(sys.argv[2]), int(sys.argv[3]), ties=ties, calls=calls)
    else:
        main()
