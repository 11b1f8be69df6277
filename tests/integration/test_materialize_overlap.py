"""The fast paths of materialization against the general ones, on real files, DuckDB and Redis.

* The latest row per key (a grouped maximum and a join) against a brute-force reference,
  over rows with ties of event time, ties of created time and missing created times.
* A window whose history and online halves run at once (on two threads, over one
  snapshot) against the same window run one half after the other: same history, same
  online values, same guarantees (never older over newer, idempotent, nothing committed
  when a half fails, SIGKILL then re-run converges).
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.cluster import RedisCluster

from skewless.core.config import RepoConfig
from skewless.core.errors import StoreUnavailableError
from skewless.materialization import pipeline
from skewless.materialization.pipeline import Phase, Progress, materialize
from skewless.materialization.view_state import read_watermark
from skewless.offline.offline_store import HistoryWriter, history_files
from skewless.offline.window_query import open_window
from skewless.online.codec import decode_value
from skewless.online.embedded_redis import EmbeddedRedis
from skewless.online.writer import OnlineWriter
from skewless.registry.feature_refs import resolve_view
from tests.helpers.redis_cluster import RedisClusterNodes
from tests.integration.matfixtures import T0, driver_rows, make_config, make_registry, write_source

DAY = timedelta(days=1)


def history(config: RepoConfig) -> pa.Table:
    files = history_files(config, "driver_stats")
    if not files:
        return pa.table({"driver_id": pa.array([], pa.int64())})
    table = pa.concat_tables(pq.read_table(f) for f in files)
    return table.sort_by(
        [("event_timestamp", "ascending"), ("driver_id", "ascending"), ("label", "ascending")]
    )


def online(url: str) -> dict[bytes, dict[bytes, object]]:
    client = redis.Redis.from_url(url)
    out = {}
    for key in client.scan_iter(match=b"mat:driver_stats:*", count=1000):
        out[key] = {
            f: (int(v) if f in (b"_ts", b"_ct") else decode_value(v))
            for f, v in client.hgetall(key).items()
        }
    client.close()
    return out


def staged_leftovers(config: RepoConfig) -> list[Path]:
    return [p for p in config.offline_dir.rglob("*") if p.suffix == ".tmp"]


@pytest.fixture
def overlapped(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every window overlaps its halves, in many small online batches."""
    monkeypatch.setattr(pipeline, "_OVERLAP_MIN_ROWS", 0)
    monkeypatch.setattr(pipeline, "_ONLINE_BATCH_ROWS", 7)


def tied_rows() -> pa.Table:
    """driver_rows, plus rows that tie on event time: later, earlier and missing created times."""
    base = driver_rows()
    extra = base.filter(pc.equal(pc.bit_wise_and(base["driver_id"], 1), 0))
    later = extra.set_column(
        2, "created", pc.add(extra["created"], pa.scalar(timedelta(seconds=5)))
    ).set_column(5, "label", pc.binary_join_element_wise(extra["label"], "later", "-"))
    missing = extra.set_column(2, "created", pa.nulls(extra.num_rows, extra.schema.field(2).type))
    missing = missing.set_column(
        5, "label", pc.binary_join_element_wise(extra["label"], "nocreated", "-")
    )
    return pa.concat_tables([base, missing, later])


# --- the latest row per key ------------------------------------------------------------------

_rows = st.lists(
    st.tuples(
        st.integers(0, 4),  # key
        st.integers(0, 5),  # event hour
        st.one_of(st.none(), st.integers(0, 3)),  # created second (None = no created time)
    ),
    min_size=1,
    max_size=40,
)


def _brute_latest(rows: list[tuple[int, int, int | None]]) -> dict[int, tuple[int, int | None]]:
    best: dict[int, tuple[int, int, int]] = {}
    for key, hour, created in rows:
        rank = (hour, 0 if created is None else 1, created or 0)
        if key not in best or rank > best[key]:
            best[key] = rank
    return {k: (r[0], r[2] if r[1] else None) for k, r in best.items()}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=_rows, snapshot=st.booleans())
def test_latest_row_per_key_matches_brute_force(
    rows: list[tuple[int, int, int | None]], snapshot: bool
) -> None:
    table = pa.table(
        {
            "driver_id": pa.array([r[0] for r in rows], pa.int64()),
            "ts": pa.array([T0 + timedelta(hours=r[1]) for r in rows], pa.timestamp("us")),
            "created": pa.array(
                [None if r[2] is None else T0 + timedelta(seconds=r[2]) for r in rows],
                pa.timestamp("us", tz="UTC"),
            ),
            "conv_rate": pa.array([float(i) for i in range(len(rows))], pa.float64()),
            "trips": pa.array(list(range(len(rows))), pa.int32()),
            "label": pa.array([f"row-{i}" for i in range(len(rows))], pa.string()),
        }
    )
    with tempfile.TemporaryDirectory() as folder:
        config = make_config(Path(folder) / "repo", "redis://127.0.0.1:1/0")
        write_source(config, table)
        registry = make_registry()
        plan = resolve_view(registry, "driver_stats")
        with open_window(config, registry, plan, T0, T0 + DAY) as window:
            reader = window.snapshot() if snapshot else window
            got = pa.Table.from_batches(
                list(reader.batches(latest_only=True, batch_rows=3)), plan.history_schema
            ).to_pylist()
            if reader is not window:
                reader.close()
    expected = _brute_latest(rows)
    assert sorted(r["driver_id"] for r in got) == sorted(expected)
    for row in got:
        hour = int((row["event_timestamp"] - T0).total_seconds() // 3600)
        created = row["created_timestamp"]
        second = None if created is None else int((created - T0).total_seconds())
        assert (hour, second) == expected[row["driver_id"]]
        # An exact tie may pick any of the tied rows, but always a whole row of the input.
        i = int(row["trips"])
        assert rows[i] == (row["driver_id"], hour, second) and row["label"] == f"row-{i}"


# --- overlapped halves against one after the other -------------------------------------------


def _materialize_both_ways(
    tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch, source: pa.Table
) -> Iterator[tuple[pa.Table, dict[bytes, dict[bytes, object]]]]:
    for threshold in (10**12, 0):  # one after the other, then overlapped
        monkeypatch.setattr(pipeline, "_OVERLAP_MIN_ROWS", threshold)
        monkeypatch.setattr(pipeline, "_ONLINE_BATCH_ROWS", 7)
        redis.Redis.from_url(redis_url).flushall()
        config = make_config(tmp_path / f"repo-{threshold}", redis_url)
        write_source(config, source)
        registry = make_registry()
        materialize(config, registry, T0 + DAY, T0 + 2 * DAY)
        materialize(config, registry, T0, T0 + DAY)  # older: never overwrites the newer
        materialize(config, registry, T0 + DAY, T0 + 2 * DAY)  # a replay: idempotent
        assert read_watermark(config, "driver_stats") == T0 + 2 * DAY
        assert staged_leftovers(config) == []
        yield history(config), online(redis_url)


def test_overlapped_halves_write_what_one_after_the_other_writes(
    tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    (seq_history, seq_online), (ovl_history, ovl_online) = _materialize_both_ways(
        tmp_path, redis_url, monkeypatch, tied_rows()
    )
    assert ovl_history.equals(seq_history)
    assert ovl_online == seq_online
    assert seq_history.num_rows == tied_rows().num_rows
    assert len(seq_online) == 20
    latest = seq_online[b"mat:driver_stats:{4}"]  # an even driver: its later created time wins
    assert latest[b"label"] == "driver-4-47-later"
    assert seq_online[b"mat:driver_stats:{5}"][b"label"] == "driver-5-47"


def test_overlapped_history_is_in_time_then_key_order_at_scale(
    tmp_path: Path, redis_url: str, overlapped: None
) -> None:
    """The snapshot is stored sorted and scanned in order, over many row groups and threads."""
    config = make_config(tmp_path / "repo", redis_url)
    rows = driver_rows(n_drivers=2_500, n_times=100, step=timedelta(minutes=20))
    write_source(config, rows.take(pa.array(range(rows.num_rows - 1, -1, -1))))  # reversed
    materialize(config, make_registry(), T0, T0 + 2 * DAY)
    files = history_files(config, "driver_stats")
    stored = pa.concat_tables(pq.read_table(f) for f in files)  # path order, unsorted
    assert stored.num_rows == rows.num_rows
    micros = pc.cast(stored["event_timestamp"], pa.int64()).to_pylist()
    order = list(zip(micros, stored["driver_id"].to_pylist(), strict=True))
    assert order == sorted(order)
    assert len(online(redis_url)) == 2_500


def test_overlapped_progress_stays_in_phase_order(
    tmp_path: Path, redis_url: str, overlapped: None
) -> None:
    config = make_config(tmp_path / "repo", redis_url)
    write_source(config, driver_rows())
    reports: list[Progress] = []
    threads: set[str] = set()

    def progress(report: Progress) -> None:
        threads.add(threading.current_thread().name)
        reports.append(report)

    materialize(config, make_registry(), T0, T0 + 2 * DAY, progress=progress)
    phases = [r.phase for r in reports]
    assert phases[-1] == Phase.DONE and Phase.ONLINE in phases
    assert phases == sorted(phases, key=[Phase.COMPUTE, Phase.ONLINE, Phase.DONE].index)
    fractions = [r.fraction for r in reports]
    assert fractions == sorted(fractions)
    assert len(online(redis_url)) == 20


def test_an_online_failure_stops_the_history_and_commits_nothing(
    tmp_path: Path, fresh_redis: EmbeddedRedis, overlapped: None
) -> None:
    config = make_config(tmp_path / "repo", fresh_redis.url)
    write_source(config, driver_rows())
    writer = OnlineWriter.from_url(fresh_redis.url)
    fresh_redis.stop()  # Redis is gone: the online half fails
    try:
        with pytest.raises(StoreUnavailableError):
            materialize(config, make_registry(), T0, T0 + 2 * DAY, writer=writer)
    finally:
        writer.close()
    assert history_files(config, "driver_stats") == []
    assert read_watermark(config, "driver_stats") is None
    assert staged_leftovers(config) == []
    assert not [t for t in threading.enumerate() if t.name.startswith("materialize-online")]


def test_a_history_failure_stops_the_online_half_and_commits_nothing(
    tmp_path: Path, redis_url: str, overlapped: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = make_config(tmp_path / "repo", redis_url)
    write_source(config, driver_rows())
    materialize(config, make_registry(), T0, T0 + DAY)
    before_history, before_online = history(config), online(redis_url)

    class FullDisk(HistoryWriter):
        def write(self, batch: pa.RecordBatch | pa.Table) -> None:
            super().write(batch)
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(pipeline, "HistoryWriter", FullDisk)
    with pytest.raises(OSError, match="No space"):
        materialize(config, make_registry(), T0, T0 + 2 * DAY)
    assert history(config).equals(before_history)
    assert read_watermark(config, "driver_stats") == T0 + DAY
    assert staged_leftovers(config) == []
    assert not [t for t in threading.enumerate() if t.name.startswith("materialize-online")]
    # What the online half wrote before it stopped is the window's own latest rows (the
    # compare-and-set keeps anything newer); a re-run converges.
    for key, row in online(redis_url).items():
        assert row[b"_ts"] >= before_online[key][b"_ts"]
    monkeypatch.setattr(pipeline, "HistoryWriter", HistoryWriter)
    materialize(config, make_registry(), T0, T0 + 2 * DAY)
    assert history(config).num_rows == 20 * 48
    assert {k: v[b"conv_rate"] for k, v in online(redis_url).items()} == {
        f"mat:driver_stats:{{{d}}}".encode(): d * 1000 + 47.0 for d in range(20)
    }


_KILLED_OVERLAPPED_JOB = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from datetime import timedelta
    sys.path.insert(0, {root!r})
    from tests.integration.matfixtures import T0, make_config, make_registry
    from skewless.materialization import pipeline as m
    from skewless.online import writer as w
    config = make_config(Path({repo!r}), {url!r})
    marker = Path({marker!r})
    m._OVERLAP_MIN_ROWS = 0
    m._ONLINE_BATCH_ROWS = 3
    write = w.OnlineWriter.write
    def written_then_wait(self, rows, **kwargs):
        out = write(self, rows, **kwargs)
        tmp = marker.with_suffix(".tmp")
        tmp.write_text("online")
        os.replace(tmp, marker)  # whole, or not there
        time.sleep(60)
        return out
    w.OnlineWriter.write = written_then_wait
    m.materialize(config, make_registry(), T0, T0 + timedelta(days=2))
    """
)


def test_sigkill_while_both_halves_run_then_rerun_converges(tmp_path: Path, redis_url: str) -> None:
    config = make_config(tmp_path / "repo", redis_url)
    write_source(config, driver_rows())
    registry = make_registry()
    materialize(config, registry, T0, T0 + 2 * DAY)
    before_history = history(config)
    changed = driver_rows()
    changed = changed.set_column(3, "conv_rate", pc.add(changed["conv_rate"], 0.5))
    write_source(config, changed)
    marker = tmp_path / "marker"
    script = _KILLED_OVERLAPPED_JOB.format(
        root=str(Path(__file__).resolve().parents[2]),
        repo=str(config.root),
        url=redis_url,
        marker=str(marker),
    )
    proc = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert proc.poll() is None, "the job ended before reaching the kill point"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(10)
    assert marker.read_text() == "online"
    assert history(config).equals(before_history)  # nothing committed
    materialize(config, registry, T0, T0 + 2 * DAY)
    table = history(config)
    assert table.num_rows == 20 * 48
    assert sorted(table["conv_rate"].to_pylist()) == sorted(changed["conv_rate"].to_pylist())
    assert {k: v[b"conv_rate"] for k, v in online(redis_url).items()} == {
        f"mat:driver_stats:{{{d}}}".encode(): d * 1000 + 47.5 for d in range(20)
    }


def test_overlapped_halves_on_redis_cluster_write_what_a_single_redis_gets(
    tmp_path: Path, redis_url: str, redis_cluster: RedisClusterNodes, overlapped: None
) -> None:
    """Calls of the compare-and-set script stay within one hash slot on a cluster."""
    for node in redis_cluster.nodes:
        client = redis.Redis(port=node.port)
        client.flushall()
        client.close()
    source = tied_rows()
    single = make_config(tmp_path / "single", redis_url)
    clustered = dataclasses.replace(
        make_config(tmp_path / "cluster", redis_cluster.url), redis_cluster=True
    )
    for config in (single, clustered):
        write_source(config, source)
        materialize(config, make_registry(), T0 + DAY, T0 + 2 * DAY)
        materialize(config, make_registry(), T0, T0 + DAY)  # older: never overwrites
    assert history(clustered).equals(history(single))
    cluster = RedisCluster.from_url(redis_cluster.url)
    try:
        on_cluster = {
            key: {
                f: (int(v) if f in (b"_ts", b"_ct") else decode_value(v))
                for f, v in cluster.hgetall(key).items()
            }
            for key in online(redis_url)
        }
    finally:
        cluster.close()
    assert on_cluster == online(redis_url)
    assert on_cluster[b"mat:driver_stats:{4}"][b"label"] == "driver-4-47-later"
