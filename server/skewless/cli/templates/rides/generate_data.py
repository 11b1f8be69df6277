"""Writes the ride-hailing example's small, deterministic Parquet files into data/.

    python examples/rides/generate_data.py [--out DIR] [--anchor now|2026-11-20T00:00:00Z]

Files (all timestamps UTC, spread over the 10 days before the anchor, which is the
current hour unless `--anchor` pins it):
  data/driver_stats.parquet      200 drivers (1001-1200), one row every ~6 hours, a few
                                 corrections (same event time, later `created`), some nulls.
  data/customer_profile.parquet  100 customers (2001-2100), about one snapshot a day, some
                                 nulls, segment labels in mixed case (the view's SQL
                                 normalizes them).
  data/orders.parquet            500 labelled trips (entity rows for training sets): order_id,
                                 driver_id, customer_id, event_timestamp, trip_completed; a few
                                 ids have no features at all.

Run with no arguments (as `make run` does) the data ends at the current hour, so the
served example answers PRESENT on any day. The same anchor and seed always give the same
rows: the anchor only shifts the times, so pass a fixed `--anchor` (tests call
`generate(out)`, pinned to `ANCHOR`) for files that are identical from run to run.
"""

from __future__ import annotations

import argparse
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

ANCHOR = datetime(2026, 11, 20, tzinfo=UTC)
SEED = 20261120
DAYS = 10
DRIVERS = range(1001, 1201)
CUSTOMERS = range(2001, 2101)
TS = pa.timestamp("us", tz="UTC")


def _maybe(rng: random.Random, value, null_share: float):
    return None if rng.random() < null_share else value


def driver_stats(anchor: datetime, rng: random.Random) -> pa.Table:
    rows = []
    start = anchor - timedelta(days=DAYS)
    for driver_id in DRIVERS:
        skill = rng.uniform(0.2, 0.95)
        busy = rng.randint(3, 25)
        for step in range(DAYS * 4):
            event = start + timedelta(hours=6 * step, minutes=rng.randint(0, 59))
            created = event + timedelta(minutes=rng.randint(1, 30))
            conv = min(1.0, max(0.0, skill + rng.gauss(0, 0.05)))
            acc = min(1.0, max(0.0, skill + 0.05 + rng.gauss(0, 0.05)))
            trips = max(0, busy + rng.randint(-3, 3))
            rows.append(
                (
                    driver_id,
                    event,
                    created,
                    _maybe(rng, round(conv, 4), 0.02),
                    _maybe(rng, round(acc, 4), 0.02),
                    _maybe(rng, trips, 0.01),
                )
            )
            if rng.random() < 0.01:  # a late correction of the same event
                rows.append(
                    (
                        driver_id,
                        event,
                        created + timedelta(hours=2),
                        round(conv * 0.9, 4),
                        round(acc, 4),
                        trips + 1,
                    )
                )
    rows.sort(key=lambda r: (r[1], r[0], r[2]))
    cols = list(zip(*rows, strict=True))
    return pa.table(
        {
            "driver_id": pa.array(cols[0], pa.int64()),
            "event_timestamp": pa.array(cols[1], TS),
            "created": pa.array(cols[2], TS),
            "conv_rate": pa.array(cols[3], pa.float32()),
            "acc_rate": pa.array(cols[4], pa.float32()),
            "avg_daily_trips": pa.array(cols[5], pa.int64()),
        }
    )


def customer_profile(anchor: datetime, rng: random.Random) -> pa.Table:
    segments = ["budget", "Standard", "PREMIUM ", " standard"]
    rows = []
    start = anchor - timedelta(days=DAYS)
    for customer_id in CUSTOMERS:
        balance = rng.uniform(0, 500)
        trips = rng.randint(0, 400)
        segment = rng.choice(segments)
        premium = segment.strip().lower() == "premium"
        for day in range(DAYS):
            if rng.random() < 0.15:  # no snapshot that day
                continue
            event = start + timedelta(days=day, hours=rng.randint(0, 23))
            balance = max(0.0, balance + rng.uniform(-40, 60))
            trips += rng.randint(0, 4)
            rows.append(
                (
                    customer_id,
                    event,
                    event + timedelta(minutes=5),
                    _maybe(rng, round(balance, 2), 0.03),
                    trips,
                    _maybe(rng, segment, 0.05),
                    _maybe(rng, premium, 0.03),
                )
            )
    rows.sort(key=lambda r: (r[1], r[0]))
    cols = list(zip(*rows, strict=True))
    return pa.table(
        {
            "customer_id": pa.array(cols[0], pa.int64()),
            "event_timestamp": pa.array(cols[1], TS),
            "created": pa.array(cols[2], TS),
            "current_balance": pa.array(cols[3], pa.float64()),
            "lifetime_trip_count": pa.array(cols[4], pa.int64()),
            "segment": pa.array(cols[5], pa.string()),
            "is_premium": pa.array(cols[6], pa.bool_()),
        }
    )


def orders(anchor: datetime, rng: random.Random) -> pa.Table:
    rows = []
    for order_id in range(1, 501):
        driver_id = rng.choice(DRIVERS) if order_id % 50 else 9999  # 9999: unknown driver
        customer_id = rng.choice(CUSTOMERS) if order_id % 70 else 8888  # 8888: unknown
        seconds = rng.randint(0, (DAYS - 1) * 86400)
        event = anchor - timedelta(days=DAYS - 1) + timedelta(seconds=seconds)
        rows.append((order_id, driver_id, customer_id, event, rng.random() < 0.8))
    cols = list(zip(*rows, strict=True))
    return pa.table(
        {
            "order_id": pa.array(cols[0], pa.int64()),
            "driver_id": pa.array(cols[1], pa.int64()),
            "customer_id": pa.array(cols[2], pa.int64()),
            "event_timestamp": pa.array(cols[3], TS),
            "trip_completed": pa.array(cols[4], pa.bool_()),
        }
    )


def generate(out: Path, anchor: datetime = ANCHOR) -> dict[str, int]:
    """Writes the three files into `out` and returns their row counts."""
    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for name, build in (
        ("driver_stats", driver_stats),
        ("customer_profile", customer_profile),
        ("orders", orders),
    ):
        table = build(anchor, random.Random(f"{SEED}-{name}"))
        pq.write_table(table, out / f"{name}.parquet")
        counts[name] = table.num_rows
    return counts


def current_hour() -> datetime:
    """The anchor of fresh data: now, rounded down to the hour (UTC)."""
    return datetime.now(UTC).replace(minute=0, second=0, microsecond=0)


def _anchor(text: str) -> datetime:
    if text == "now":
        return current_hour()
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).absolute().parent / "data")
    parser.add_argument(
        "--anchor",
        type=_anchor,
        default="now",
        help="end of the 10-day window: 'now' (the default: the current hour) or an ISO "
        "time such as 2026-11-20T00:00:00Z for reproducible files",
    )
    args = parser.parse_args()
    for name, rows in generate(args.out, args.anchor).items():
        print(f"{args.out / (name + '.parquet')}: {rows} rows")


if __name__ == "__main__":
    main()
