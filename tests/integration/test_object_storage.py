"""Delta tables on a real S3-compatible server (SeaweedFS `weed`, from the `s3_server` fixture).

What the offline store on object storage relies on: `deltalake` writes and reads a table under
`s3://bucket/prefix` exactly, concurrent writers in separate processes all land (conditional
put, no lock service), and pyarrow and DuckDB (through Arrow; DuckDB's own S3 extension is not
used) read exactly the Parquet files a Delta snapshot references.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable, write_deltalake

from tests.helpers.s3 import S3Server

DAY0 = datetime(2025, 3, 1, tzinfo=UTC)

SCHEMA = pa.schema(
    [
        ("day", pa.string()),
        ("event_ts", pa.timestamp("us", tz="UTC")),
        ("driver_id", pa.int64()),
        ("trips", pa.int32()),
        ("rating", pa.float64()),
        ("city", pa.string()),
        ("active", pa.bool_()),
    ]
)


def rows(day: int, keys: range, version: int) -> pa.Table:
    """One day's rows for `keys`; `version` changes the values so rewrites are visible."""
    ts = [DAY0 + timedelta(days=day, minutes=7 * k) for k in keys]
    return pa.table(
        {
            "day": [(DAY0 + timedelta(days=day)).date().isoformat()] * len(keys),
            "event_ts": ts,
            "driver_id": list(keys),
            "trips": [k * 3 + version for k in keys],
            "rating": [None if k % 5 == 0 else k / 7 + version for k in keys],
            "city": [None if k % 4 == 0 else f"city-{k % 3}" for k in keys],
            "active": [k % 2 == 0 for k in keys],
        },
        schema=SCHEMA,
    )


def canonical(table: pa.Table) -> pa.Table:
    return table.select(SCHEMA.names).sort_by([("day", "ascending"), ("driver_id", "ascending")])


def fresh_uri(s3: S3Server, name: str) -> str:
    return s3.uri("tests", f"{name}-{uuid.uuid4().hex[:8]}")


def snapshot_files(table: DeltaTable) -> list[dict[str, object]]:
    actions: list[dict[str, object]] = pa.table(table.get_add_actions(flatten=True)).to_pylist()
    return actions


def test_delta_table_round_trips_exactly(s3_server: S3Server) -> None:
    uri = fresh_uri(s3_server, "roundtrip")
    written = pa.concat_tables([rows(0, range(0, 40), 0), rows(1, range(10, 30), 0)])
    write_deltalake(uri, written, partition_by=["day"], storage_options=s3_server.storage_options)

    table = DeltaTable(uri, storage_options=s3_server.storage_options)
    assert table.version() == 0
    read = canonical(table.to_pyarrow_table())
    assert read.schema == SCHEMA
    assert read.equals(canonical(written))
    # The commit really is on the server, as an object under the prefix.
    fs = s3_server.filesystem()
    log = uri.removeprefix("s3://") + "/_delta_log/00000000000000000000.json"
    assert fs.get_file_info(log).type == pafs.FileType.File


def test_server_rejects_wrong_credentials(s3_server: S3Server) -> None:
    uri = fresh_uri(s3_server, "auth")
    write_deltalake(uri, rows(0, range(3), 0), storage_options=s3_server.storage_options)
    wrong = {**s3_server.storage_options, "AWS_SECRET_ACCESS_KEY": "not-the-secret"}
    with pytest.raises(Exception, match=r"(?i)signature|denied|403"):
        DeltaTable(uri, storage_options=wrong)


def test_predicate_overwrite_replaces_only_its_window(s3_server: S3Server) -> None:
    uri = fresh_uri(s3_server, "overwrite")
    so = s3_server.storage_options
    write_deltalake(
        uri,
        pa.concat_tables([rows(0, range(10), 0), rows(1, range(10), 0)]),
        partition_by=["day"],
        storage_options=so,
    )
    write_deltalake(
        uri,
        rows(1, range(3, 6), 1),
        mode="overwrite",
        predicate="day = '2025-03-02'",
        storage_options=so,
    )

    table = DeltaTable(uri, storage_options=so)
    assert table.version() == 1
    assert canonical(table.to_pyarrow_table()).equals(
        canonical(pa.concat_tables([rows(0, range(10), 0), rows(1, range(3, 6), 1)]))
    )
    # The previous version is still readable as it was (time travel).
    before = DeltaTable(uri, version=0, storage_options=so).to_pyarrow_table()
    assert canonical(before).equals(
        canonical(pa.concat_tables([rows(0, range(10), 0), rows(1, range(10), 0)]))
    )


APPENDER = """
import json, sys, time
import pyarrow as pa
from deltalake import write_deltalake

uri, options, writer, count, start_at = sys.argv[1:6]
options = json.loads(options)
while time.time() < float(start_at):
    time.sleep(0.005)
for i in range(int(count)):
    batch = pa.table({"writer": [writer], "seq": pa.array([i], pa.int64())})
    write_deltalake(uri, batch, mode="append", storage_options=options)
"""


def test_two_processes_appending_concurrently_both_land(s3_server: S3Server) -> None:
    uri = fresh_uri(s3_server, "concurrent")
    so = s3_server.storage_options
    write_deltalake(
        uri, pa.table({"writer": ["init"], "seq": pa.array([0], pa.int64())}), storage_options=so
    )

    count = 8
    start_at = time.time() + 1.5  # both have imported deltalake by then
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", APPENDER, uri, json.dumps(so), name, str(count), str(start_at)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for name in ("a", "b")
    ]
    for proc in writers:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err.decode()[-2000:]

    table = DeltaTable(uri, storage_options=so)
    got = table.to_pyarrow_table()
    assert got.num_rows == 1 + 2 * count
    assert sorted(zip(got["writer"].to_pylist(), got["seq"].to_pylist(), strict=True)) == sorted(
        [("init", 0)] + [(w, i) for w in ("a", "b") for i in range(count)]
    )
    # One commit per append, versions contiguous: no commit overwrote another.
    assert table.version() == 2 * count
    history = table.history()
    assert sorted(h["version"] for h in history) == list(range(2 * count + 1))


def test_stale_writer_retries_on_the_next_version_instead_of_overwriting(
    s3_server: S3Server,
) -> None:
    """Deterministic conflict: a writer on an old snapshot commits after another writer did."""
    uri = fresh_uri(s3_server, "stale")
    so = s3_server.storage_options
    write_deltalake(uri, pa.table({"writer": ["init"]}), storage_options=so)
    stale = DeltaTable(uri, storage_options=so)  # sees version 0
    write_deltalake(
        uri, pa.table({"writer": ["fresh"]}), mode="append", storage_options=so
    )  # version 1

    # Its first try to create version 1's commit file is refused (If-None-Match), so it
    # re-checks for conflicts and commits version 2: nothing is lost.
    write_deltalake(stale, pa.table({"writer": ["stale"]}), mode="append")

    table = DeltaTable(uri, storage_options=so)
    assert table.version() == 2
    assert sorted(table.to_pyarrow_table()["writer"].to_pylist()) == ["fresh", "init", "stale"]


@pytest.fixture(scope="module")
def rewritten_table(s3_server: S3Server) -> tuple[str, pa.Table]:
    """A partitioned table whose day 2 was rewritten: its old files are still on the server."""
    uri = fresh_uri(s3_server, "snapshot")
    so = s3_server.storage_options
    for day in range(3):
        write_deltalake(
            uri, rows(day, range(0, 50), 0), mode="append", partition_by=["day"], storage_options=so
        )
    write_deltalake(
        uri,
        rows(2, range(20, 30), 1),
        mode="overwrite",
        predicate="day = '2025-03-03'",
        storage_options=so,
    )
    write_deltalake(uri, rows(2, range(60, 64), 1), mode="append", storage_options=so)
    expected = pa.concat_tables(
        [
            rows(0, range(50), 0),
            rows(1, range(50), 0),
            rows(2, range(20, 30), 1),
            rows(2, range(60, 64), 1),
        ]
    )
    return uri, canonical(expected)


def test_pyarrow_reads_exactly_the_files_the_snapshot_references(
    s3_server: S3Server, rewritten_table: tuple[str, pa.Table]
) -> None:
    uri, expected = rewritten_table
    table = DeltaTable(uri, storage_options=s3_server.storage_options)
    assert canonical(table.to_pyarrow_table()).equals(expected)

    fs = s3_server.filesystem()
    root = uri.removeprefix("s3://")
    files = snapshot_files(table)
    listed = {
        info.path.removeprefix(root + "/")
        for info in fs.get_file_info(pafs.FileSelector(root, recursive=True))
        if info.path.endswith(".parquet")
    }
    referenced = {str(f["path"]) for f in files}
    # The rewritten day's old file is still listed: a plain listing would read it as data.
    assert referenced < listed

    pieces = []
    for f in files:
        piece = pq.read_table(f"{root}/{f['path']}", filesystem=fs)
        assert piece.num_rows == f["num_records"]
        assert fs.get_file_info(f"{root}/{f['path']}").size == f["size_bytes"]
        # Delta keeps partition values in the log (and the path), not in the Parquet file.
        assert "day" not in piece.column_names
        piece = piece.append_column(
            "day", pa.array([f["partition.day"]] * piece.num_rows, pa.string())
        )
        # The statistics bound what the file holds (what a planner prunes on).
        assert (
            piece["event_ts"].to_pylist()
            and min(piece["event_ts"].to_pylist()) == f["min.event_ts"]
        )
        assert max(piece["driver_id"].to_pylist()) == f["max.driver_id"]
        pieces.append(piece.select(SCHEMA.names))
    assert canonical(pa.concat_tables(pieces)).equals(expected)


def test_duckdb_scans_the_snapshot_files_through_arrow(
    s3_server: S3Server, rewritten_table: tuple[str, pa.Table]
) -> None:
    uri, expected = rewritten_table
    table = DeltaTable(uri, storage_options=s3_server.storage_options)
    root = uri.removeprefix("s3://")
    dataset = ds.dataset(
        [f"{root}/{f['path']}" for f in snapshot_files(table)],
        filesystem=s3_server.filesystem(),
        format="parquet",
        partitioning=ds.partitioning(pa.schema([("day", pa.string())]), flavor="hive"),
        partition_base_dir=root,
    )
    con = duckdb.connect()
    con.register("history", dataset)
    got = con.sql(
        """
        SELECT day, count(*) AS n, sum(trips) AS trips, count(rating) AS rated,
               epoch_us(max(event_ts)) AS last_us
        FROM history WHERE active GROUP BY day ORDER BY day
        """
    ).fetchall()

    want = []
    for day in sorted(set(expected["day"].to_pylist())):
        selected = [r for r in expected.to_pylist() if r["day"] == day and r["active"]]
        want.append(
            (
                day,
                len(selected),
                sum(r["trips"] for r in selected),
                sum(r["rating"] is not None for r in selected),
                (max(r["event_ts"] for r in selected) - DAY0) // timedelta(microseconds=1)
                + int(DAY0.timestamp()) * 1_000_000,
            )
        )
    assert got == want
    con.close()
