"""Writes the minimal repository's data: data/user_activity.parquet.

    python generate_data.py [--out DIR] [--anchor now|2026-11-20T00:00:00Z]

Users 1-10, one row per user and hour over the 24 hours before the anchor (the current
hour unless `--anchor` pins it), so the served values are fresh. The same anchor always
gives the same rows.
"""

from __future__ import annotations

import argparse
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

USERS = range(1, 11)
HOURS = 24


def current_hour() -> datetime:
    """The anchor of fresh data: now, rounded down to the hour (UTC)."""
    return datetime.now(UTC).replace(minute=0, second=0, microsecond=0)


def generate(out: Path, anchor: datetime) -> dict[str, int]:
    """Writes the file into `out` and returns its row count by name."""
    rng = random.Random(20261120)
    rows = []
    for hour in range(HOURS):
        event = anchor - timedelta(hours=HOURS - hour)
        for user_id in USERS:
            rows.append((user_id, event, rng.randint(0, 40), round(rng.uniform(0, 80), 2)))
    cols = list(zip(*rows, strict=True))
    table = pa.table(
        {
            "user_id": pa.array(cols[0], pa.int64()),
            "event_timestamp": pa.array(cols[1], pa.timestamp("us", tz="UTC")),
            "clicks": pa.array(cols[2], pa.int64()),
            "spend": pa.array(cols[3], pa.float64()),
        }
    )
    out.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, out / "user_activity.parquet")
    return {"user_activity": table.num_rows}


def _anchor(text: str) -> datetime:
    if text == "now":
        return current_hour()
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "data")
    parser.add_argument("--anchor", type=_anchor, default="now", help="'now' or an ISO time")
    args = parser.parse_args()
    for name, rows in generate(args.out, args.anchor).items():
        print(f"{args.out / (name + '.parquet')}: {rows} rows")


if __name__ == "__main__":
    main()
