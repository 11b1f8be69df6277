"""The offline half of the cross-language contract fixture: feature history and entity rows.

`client_harness.serve_fixture` calls `seed_history` before it starts the server, so the
fixture that answers the online lookups also answers `GetHistoricalFeatures`: the
feature history below is committed with the real offline writer (day files and a
manifest), and `ENTITY_ROWS_FILE` (relative to the served repository) holds the entity
rows every client queries by `path`. `EXPECTED_DRIVER_STATS` says, row by row, which
history row the point-in-time join must pick; docs/clients.md lists what each row
exercises.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from skewless.core.config import RepoConfig
from skewless.offline.offline_store import ORIGIN_PUSH, HistoryWriter, commit_append

#: The entity rows file, relative to the served repository (its data folder).
ENTITY_ROWS_FILE = "historical_rows.parquet"

UTC_US = pa.timestamp("us", tz="UTC")
DAY = dt.timedelta(days=1)
HOUR = dt.timedelta(hours=1)
T1 = dt.datetime(2025, 6, 1, 12, 0, 0, 123456, tzinfo=dt.UTC)
T2 = dt.datetime(2025, 6, 1, 13, 30, tzinfo=dt.UTC)
T3 = dt.datetime(2025, 5, 31, 0, 0, 0, 1, tzinfo=dt.UTC)
STALE = dt.datetime(2001, 2, 3, 4, 5, 6, tzinfo=dt.UTC)  # older than the 20-year TTL in 2025

#: driver_stats history: driver_id, event time, created time, conv_rate, acc_rate,
#: avg_daily_trips.
DRIVER_HISTORY: tuple[tuple[Any, ...], ...] = (
    (1001, T1 - DAY, None, 0.5, 0.25, 40),
    (1001, T1, None, 0.85, 0.5, 42),
    (1001, T1 + DAY, None, 0.9, 0.55, 44),
    (1002, T2, None, None, 0.75, 7),  # conv_rate stored as null
    (1003, STALE, None, 0.1, 0.2, 3),
    (1004, T1, T1, 0.3, 0.3, 1),  # same event time: the greater created time wins
    (1004, T1, T1 + HOUR, 0.4, 0.4, 2),
)

#: customer_profile history: customer_id, event time, current_balance,
#: lifetime_trip_count, segment, is_premium.
CUSTOMER_HISTORY: tuple[tuple[Any, ...], ...] = (
    (2001, T3, 12.5, 130, "premium", True),
    (2001, T1 + DAY, 13.0, 131, "premium", True),
    (2002, T2, 0.1, 2, "économie ✓", False),
    (2004, T1, -3.25, 0, "budget", None),  # is_premium stored as null
)

#: The entity rows: driver_id, customer_id, label time, trip_id, label.
ENTITY_ROWS: tuple[tuple[Any, ...], ...] = (
    (1001, 2001, T1 + HOUR, "t0", True),  # the T1 rows of both
    (1001, 2002, T1 - dt.timedelta(microseconds=1), "t1", False),  # earlier row; 2002 later
    (1002, 2004, T2, "t2", True),  # label time == event time (inclusive); stored nulls
    (1003, 2001, dt.datetime(2025, 6, 2, tzinfo=dt.UTC), "t3", False),  # 1003 outside TTL
    (1003, 8888, dt.datetime(2010, 1, 1, tzinfo=dt.UTC), "t4", True),  # 1003 within TTL
    (9999, 2002, T2 + DAY, "t5", False),  # driver never seen
    (1001, 2001, dt.datetime(2020, 1, 1, tzinfo=dt.UTC), "t6", True),  # before all history
    (1004, 2001, T1 + 2 * HOUR, "t7", False),  # event-time tie
    (1001, 2001, T1, "t8", True),  # exactly the T1 event time, to the microsecond
    (1001, 2001, T1 + DAY + HOUR, "t9", False),  # the newest rows of both
)

#: avg_daily_trips that the point-in-time join must return for each entity row.
EXPECTED_TRIPS: tuple[int | None, ...] = (42, 40, 7, None, 3, None, None, 2, 42, 44)
#: current_balance for each entity row.
EXPECTED_BALANCE: tuple[float | None, ...] = (
    12.5,
    None,
    -3.25,
    12.5,
    None,
    0.1,
    None,
    12.5,
    12.5,
    13.0,
)


def _column(rows: tuple[tuple[Any, ...], ...], index: int, kind: pa.DataType) -> pa.Array:
    return pa.array([row[index] for row in rows], kind)


def driver_history() -> pa.Table:
    """`DRIVER_HISTORY` in the offline history schema of driver_stats."""
    return pa.table(
        {
            "driver_id": _column(DRIVER_HISTORY, 0, pa.int64()),
            "event_timestamp": _column(DRIVER_HISTORY, 1, UTC_US),
            "created_timestamp": _column(DRIVER_HISTORY, 2, UTC_US),
            "conv_rate": _column(DRIVER_HISTORY, 3, pa.float32()),
            "acc_rate": _column(DRIVER_HISTORY, 4, pa.float32()),
            "avg_daily_trips": _column(DRIVER_HISTORY, 5, pa.int64()),
        }
    )


def customer_history() -> pa.Table:
    """`CUSTOMER_HISTORY` in the offline history schema of customer_profile."""
    return pa.table(
        {
            "customer_id": _column(CUSTOMER_HISTORY, 0, pa.int64()),
            "event_timestamp": _column(CUSTOMER_HISTORY, 1, UTC_US),
            "created_timestamp": pa.nulls(len(CUSTOMER_HISTORY), UTC_US),
            "current_balance": _column(CUSTOMER_HISTORY, 2, pa.float64()),
            "lifetime_trip_count": _column(CUSTOMER_HISTORY, 3, pa.int64()),
            "segment": _column(CUSTOMER_HISTORY, 4, pa.string()),
            "is_premium": _column(CUSTOMER_HISTORY, 5, pa.bool_()),
        }
    )


def entity_rows() -> pa.Table:
    """`ENTITY_ROWS` as the table written to `ENTITY_ROWS_FILE`."""
    return pa.table(
        {
            "driver_id": _column(ENTITY_ROWS, 0, pa.int64()),
            "customer_id": _column(ENTITY_ROWS, 1, pa.int64()),
            "event_timestamp": _column(ENTITY_ROWS, 2, UTC_US),
            "trip_id": _column(ENTITY_ROWS, 3, pa.string()),
            "label": _column(ENTITY_ROWS, 4, pa.bool_()),
        }
    )


def seed_history(data_dir: Path, project: str) -> None:
    """Commits both views' history under `data_dir` and writes `ENTITY_ROWS_FILE` there.

    `data_dir` is both the repository root and the data folder of the served fixture.
    """
    config = RepoConfig(root=data_dir, project=project, data_dir=data_dir)
    for view, table in (
        ("driver_stats", driver_history()),
        ("customer_profile", customer_history()),
    ):
        writer = HistoryWriter(config, view, table.schema, origin=ORIGIN_PUSH)
        writer.write(table)
        commit_append(config, view, writer.close())
    pq.write_table(entity_rows(), data_dir / ENTITY_ROWS_FILE)
