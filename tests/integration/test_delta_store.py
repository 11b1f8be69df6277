"""The offline store as Delta tables: atomic windows, appends, concurrent writers."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable
from google.protobuf import duration_pb2

from skewless.core.config import RepoConfig
from skewless.materialization.pipeline import materialize
from skewless.offline.offline_store import history_dir, history_files, read_files
from skewless.v1 import registry_pb2
from tests.helpers.processes import stop_process
from tests.integration.matfixtures import (
    T0,
    VT,
    driver_rows,
    make_config,
    make_registry,
    write_source,
)

DAY = timedelta(days=1)
ROOT = Path(__file__).resolve().parents[2]


def stored(config: RepoConfig, view: str = "driver_stats") -> pa.Table:
    files = history_files(config, view)
    table = pa.concat_tables(pq.read_table(f) for f in files)
    return table.sort_by([("event_timestamp", "ascending"), ("driver_id", "ascending")])


@pytest.fixture
def repo(tmp_path: Path, redis_url: str) -> RepoConfig:
    config = make_config(tmp_path / "repo", redis_url)
    write_source(config, driver_rows())
    return config


def test_a_window_is_one_commit_and_a_rerun_equals_one_run(repo: RepoConfig) -> None:
    registry = make_registry()
    materialize(repo, registry, T0, T0 + 2 * DAY)
    once = stored(repo)
    table = DeltaTable(str(history_dir(repo, "driver_stats")))
    first = table.version()
    materialize(repo, registry, T0 + timedelta(hours=12), T0 + timedelta(hours=36))
    materialize(repo, registry, T0, T0 + 2 * DAY)
    assert stored(repo).equals(once)
    table.update_incremental()
    assert table.version() == first + 2  # one commit per window
    operations = [h.get("skewless.operation") for h in table.history(3)]
    assert operations[:2] == ["window", "window"]
    # Every engine reading the Delta table sees the same rows (not the replaced files).
    delta_rows = pa.table(table.to_pyarrow_table()).drop_columns(["event_date"])
    assert delta_rows.num_rows == once.num_rows


_PUSHER = """
import sys, time
from pathlib import Path
from datetime import timedelta
import pyarrow as pa
from deltalake import DeltaTable
from skewless.offline.offline_store import ORIGIN_PUSH, HistoryWriter, commit_append, history_dir
from skewless.registry.feature_refs import resolve_view
from tests.integration.matfixtures import T0, make_config, make_registry
config = make_config(Path(sys.argv[1]), sys.argv[2])
first, count = int(sys.argv[3]), int(sys.argv[4])
go = Path(sys.argv[5])
plan = resolve_view(make_registry(), "driver_stats")
table_path = str(history_dir(config, "driver_stats"))
Path(f"{go}.ready-{first}").touch()
while not go.exists():
    time.sleep(0.01)

def window_after(version):
    return any(
        h.get("skewless.operation") == "window" and h["version"] > version
        for h in DeltaTable(table_path).history()
    )

for i in range(first, first + count):
    if i == first + count // 2:
        # Half the pushes are in: the rest wait for a window committed after them, so
        # appends land both before and after a window whatever the processes' speeds.
        seen = DeltaTable(table_path).version()
        deadline = time.monotonic() + 120
        while not window_after(seen) and time.monotonic() < deadline:
            time.sleep(0.02)
    row = pa.table({
        "driver_id": pa.array([i], pa.int64()),
        "event_timestamp": pa.array(
            [T0 + timedelta(minutes=i % 2000)], pa.timestamp("us", tz="UTC")
        ),
        "created_timestamp": pa.array([None], pa.timestamp("us", tz="UTC")),
        "conv_rate": pa.array([float(i)]),
        "trips": pa.array([i], pa.int64()),
        "label": pa.array([f"pushed-{i}"]),
    }).cast(plan.history_schema)
    writer = HistoryWriter(config, "driver_stats", plan.history_schema, origin=ORIGIN_PUSH)
    writer.write(row)
    commit_append(config, "driver_stats", writer.close())
print("done", flush=True)
"""

_MATERIALIZER = """
import sys, time
from pathlib import Path
from datetime import timedelta
from skewless.materialization.pipeline import materialize
from tests.integration.matfixtures import T0, make_config, make_registry
config = make_config(Path(sys.argv[1]), sys.argv[2])
go = Path(sys.argv[3])
Path(f"{go}.ready-m").touch()
while not go.exists():
    time.sleep(0.01)
for i in range(int(sys.argv[4])):
    shift = timedelta(hours=(i * 7) % 24)
    materialize(config, make_registry(), T0 + shift, T0 + timedelta(days=1) + shift)
materialize(config, make_registry(), T0, T0 + timedelta(days=2))
print("done", flush=True)
"""


def test_concurrent_materialization_and_pushes_both_land(repo: RepoConfig) -> None:
    """Real writer processes on one view: every push lands, windows are exact."""
    registry = make_registry()
    materialize(repo, registry, T0, T0 + 2 * DAY)
    materialized = stored(repo)
    go = repo.root / "go"
    args = [str(repo.root), repo.redis_url]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _MATERIALIZER, *args, str(go), "6"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        ),
        *(
            subprocess.Popen(
                [sys.executable, "-c", _PUSHER, *args, str(10_000 + 1000 * n), "15", str(go)],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                text=True,
            )
            for n in range(2)
        ),
    ]
    try:
        ready = [Path(f"{go}.ready-{name}") for name in ("m", 10_000, 11_000)]
        deadline = time.monotonic() + 120
        while not all(r.exists() for r in ready) and time.monotonic() < deadline:
            time.sleep(0.02)  # every writer imported and set up
        go.touch()
        for proc in procs:
            out, _ = proc.communicate(timeout=300)
            assert proc.returncode == 0 and out.strip() == "done"
    finally:
        for proc in procs:
            if proc.poll() is None:
                stop_process(proc)
    rows = stored(repo)
    pushed = rows.filter(pa.compute.greater_equal(rows["driver_id"], 10_000))
    assert sorted(pushed["driver_id"].to_pylist()) == [
        *range(10_000, 10_015),
        *range(11_000, 11_015),
    ]
    kept = rows.filter(pa.compute.less(rows["driver_id"], 10_000))
    assert kept.equals(materialized)
    assert sum(f.origin == "push" for f in read_files(repo, "driver_stats")) == 30
    table = DeltaTable(str(history_dir(repo, "driver_stats")))
    ops = "".join(
        {"window": "w", "append": "a"}.get(h.get("skewless.operation", ""), "")
        for h in reversed(table.history())
    )
    assert re.search("a.*w.*a", ops), ops  # the writers did overlap


def _old_layout_store(config: RepoConfig) -> pa.Table:
    """Writes `driver_stats` as the manifest layout left it: day files and `_manifest.json`."""
    import json

    from skewless.registry.feature_refs import resolve_view

    plan = resolve_view(make_registry(), "driver_stats")
    rows = driver_rows(n_drivers=3, n_times=30)
    table = pa.table(
        {
            "driver_id": rows["driver_id"],
            "event_timestamp": rows["ts"].cast(pa.timestamp("us", tz="UTC")),
            "created_timestamp": rows["created"],
            "conv_rate": rows["conv_rate"],
            "trips": rows["trips"].cast(pa.int64()),
            "label": rows["label"],
        }
    ).cast(plan.history_schema)
    folder = history_dir(config, "driver_stats")
    entries = []
    for n, (part, origin) in enumerate([(table.slice(0, 72), "window"), (table.slice(72), "push")]):
        rel = f"date=2024-03-0{n + 1}/2024030{n + 1}T000000000000-0000000{n}.parquet"
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(part, folder / rel)
        micros = part["event_timestamp"].cast(pa.int64())
        entries.append(
            {
                "path": rel,
                "min_event_us": pa.compute.min(micros).as_py(),
                "max_event_us": pa.compute.max(micros).as_py(),
                "rows": part.num_rows,
                "origin": origin,
            }
        )
    (folder / "_manifest.json").write_text(json.dumps({"version": 1, "files": entries}))
    return table


def test_an_old_layout_store_is_refused_then_migrated_by_the_command(
    repo: RepoConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    from skewless.cli import main
    from skewless.core.errors import FailedPreconditionError

    old = _old_layout_store(repo)
    with pytest.raises(FailedPreconditionError) as info:
        history_files(repo, "driver_stats")
    assert info.value.reason == "OFFLINE_LAYOUT_OUTDATED"
    assert "skewless migrate-offline" in info.value.message
    assert "re-run `skewless materialize`" in info.value.message
    (repo.root / "skewless.yaml").write_text(
        f"project: mat\ndata_dir: .skewless\nonline_store: {{redis_url: '{repo.redis_url}'}}\n"
    )
    from skewless.registry.registry_store import RegistryStore

    RegistryStore(repo.registry_path).save(make_registry())
    assert main(["materialize", "2024-03-01", "2024-03-02", "--repo", str(repo.root)]) != 0
    refused = capsys.readouterr()
    assert "migrate-offline" in refused.err + refused.out
    assert main(["migrate-offline", "--repo", str(repo.root)]) == 0
    assert "driver_stats: 2 file(s), 90 row(s)" in capsys.readouterr().out
    from skewless.offline.delta_log import forget_layout_check

    forget_layout_check(repo)  # this process checked the old store before the command ran
    assert stored(repo).equals(
        old.sort_by([("event_timestamp", "ascending"), ("driver_id", "ascending")])
    )
    assert sorted(f.origin for f in read_files(repo, "driver_stats")) == ["push", "window"]
    assert not (history_dir(repo, "driver_stats") / "_manifest.json").exists()
    layout = (repo.offline_dir / "_layout.json").read_text()
    assert '"layout": 2' in layout
    # A re-run window replaces the migrated materialized rows and keeps the pushed ones.
    materialize(repo, make_registry(), T0, T0 + DAY)
    assert sum(f.origin == "push" for f in read_files(repo, "driver_stats")) == 1


def _push_rows(config: RepoConfig, drivers: list[int], at_minutes: list[int]) -> None:
    from skewless.offline.offline_store import ORIGIN_PUSH, HistoryWriter, commit_append
    from skewless.registry.feature_refs import resolve_view

    plan = resolve_view(make_registry(push=True), "driver_live")
    times = [T0 + timedelta(minutes=m) for m in at_minutes]
    table = pa.table(
        {
            "driver_id": pa.array(drivers, pa.int64()),
            "event_timestamp": pa.array(times, pa.timestamp("us", tz="UTC")),
            "created_timestamp": pa.array([None] * len(drivers), pa.timestamp("us", tz="UTC")),
            "conv_rate": pa.array(
                [float(d * 10 + m) for d, m in zip(drivers, at_minutes, strict=True)]
            ),
            "trips": pa.array(at_minutes, pa.int64()),
            "label": pa.array([f"{d}@{m}" for d, m in zip(drivers, at_minutes, strict=True)]),
        }
    ).cast(plan.history_schema)
    writer = HistoryWriter(config, "driver_live", plan.history_schema, origin=ORIGIN_PUSH)
    writer.write(table)
    commit_append(config, "driver_live", writer.close())


def _join(config: RepoConfig, rows: pa.Table) -> tuple[pa.Table, bool]:
    """The in-process join of `driver_live`, and whether its history needed the tie step."""
    import duckdb

    from skewless.offline.history_index import HistoryLoader, ViewHistory, has_ties
    from skewless.offline.point_in_time import point_in_time_join
    from skewless.registry.feature_refs import resolve_feature_refs

    plan = resolve_feature_refs(make_registry(push=True), ["driver_live"])
    histories = [ViewHistory(v, tuple(history_files(config, v.name))) for v in plan.views]
    join = point_in_time_join(rows, plan, histories)
    try:
        result = join.reader.read_all()
    finally:
        join.close()
    con = duckdb.connect()
    loader = HistoryLoader(con, None, None)
    hi = {"hi0": T0 + 10 * DAY}
    loaded = loader.load(0, histories[0], hi, dedupe=False)
    ties = has_ties(con, loaded, plan.views[0])
    from skewless.offline.history_index import _strictly_ordered

    ordered = _strictly_ordered(loaded.index, plan.views[0].join_key_names)
    con.close()
    return result, ties or not ordered


def test_compaction_restores_time_order_and_keeps_every_answer(
    repo: RepoConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    from skewless.cli import main
    from skewless.registry.registry_store import RegistryStore

    RegistryStore(repo.registry_path).save(make_registry(push=True))
    (repo.root / "skewless.yaml").write_text(
        f"project: mat\ndata_dir: .skewless\nonline_store: {{redis_url: '{repo.redis_url}'}}\n"
    )
    _push_rows(repo, [3, 1, 2], [50, 10, 30])
    _push_rows(repo, [2, 1], [20, 10])  # driver 1 at minute 10 again: a tie, newer file wins
    _push_rows(repo, [1, 3], [60 * 30, 5])  # the next day, and an early row
    labels = pa.table(
        {
            "driver_id": pa.array([1, 2, 3, 1, 3, 4], pa.int64()),
            "event_timestamp": pa.array(
                [T0 + timedelta(minutes=m) for m in (15, 25, 60, 60 * 31, 6, 1)],
                pa.timestamp("us", tz="UTC"),
            ),
        }
    )
    before, slow = _join(repo, labels)
    assert slow
    assert main(["compact", "--repo", str(repo.root), "--views", "driver_live"]) == 0
    assert "driver_live: 3 pushed file(s) rewritten as 1" in capsys.readouterr().out
    after, slow_after = _join(repo, labels)
    assert after.equals(before)
    assert before["label"].to_pylist()[0] == "1@10"
    files = read_files(repo, "driver_live")
    assert len(files) == 2  # one per day (the second day had one file, in order)
    assert main(["vacuum", "--retain", "0", "--repo", str(repo.root)]) == 0
    assert "driver_live: 3 file(s) deleted" in capsys.readouterr().out
    assert _join(repo, labels)[0].equals(before)
    # A tie remains (driver 1, minute 10, twice): order is restored, the tie step stays.
    assert slow_after


def test_offline_retention_removes_old_files_on_the_sweep(repo: RepoConfig) -> None:
    from google.protobuf import duration_pb2

    from skewless.materialization.retention import sweep_retention

    registry = make_registry()
    materialize(repo, registry, T0, T0 + 2 * DAY)
    registry.feature_views[0].offline_retention.CopyFrom(
        duration_pb2.Duration(seconds=int(timedelta(days=1).total_seconds()))
    )
    results = sweep_retention(repo, registry, now=T0 + 2 * DAY + timedelta(hours=1))
    assert [(r.view, r.files_removed) for r in results] == [("driver_stats", 1)]
    remaining = stored(repo)
    assert pa.compute.min(remaining["event_timestamp"]).as_py() == T0 + DAY
    assert (
        sweep_retention(repo, registry, now=T0 + 2 * DAY + timedelta(hours=1))[0].files_removed == 0
    )


_DELTA_REPO = """
entities:
  - name: driver
    join_keys: [{{name: driver_id, value_type: INT64}}]
sources:
  - name: trips
    delta: data/trips_delta
    {version}
    timestamp_field: ts
feature_views:
  - name: trip_stats
    entities: [driver]
    source: trips
    features:
      - {{name: fare, type: FLOAT64}}
"""


def test_a_delta_table_is_a_source_at_a_pinned_or_latest_version(
    tmp_path: Path, redis_url: str
) -> None:
    from deltalake import write_deltalake

    from skewless.registry.apply import apply_repo
    from skewless.registry.validation import DefinitionProblemsError

    repo = tmp_path / "repo"
    (repo / "features").mkdir(parents=True)
    (repo / "skewless.yaml").write_text(
        f"project: mat\ndata_dir: .skewless\nonline_store: {{redis_url: '{redis_url}'}}\n"
    )
    table = repo / "data" / "trips_delta"

    def rows(fare: float) -> pa.Table:
        return pa.table(
            {
                "driver_id": pa.array([1, 2], pa.int64()),
                "ts": pa.array([T0, T0 + timedelta(hours=1)], pa.timestamp("us", tz="UTC")),
                "fare": [fare, fare + 1],
            }
        )

    write_deltalake(str(table), rows(10.0))  # version 0
    write_deltalake(str(table), rows(20.0), mode="overwrite")  # version 1
    definitions = repo / "features" / "trips.yaml"
    for version, fares in (("version: 0", [10.0, 11.0]), ("", [20.0, 21.0])):
        definitions.write_text(_DELTA_REPO.format(version=version))
        registry = apply_repo(repo).registry
        config = make_config(repo, redis_url)
        materialize(config, registry, T0, T0 + DAY)
        assert stored(config, "trip_stats")["fare"].to_pylist() == fares
    definitions.write_text(_DELTA_REPO.format(version="version: 7"))
    with pytest.raises(DefinitionProblemsError) as bad:
        apply_repo(repo)
    assert "cannot read version 7 of the Delta table" in str(bad.value)
    definitions.write_text(_DELTA_REPO.format(version="").replace("trips_delta", "missing"))
    with pytest.raises(DefinitionProblemsError) as missing:
        apply_repo(repo)
    assert "no Delta table at 'data/missing'" in str(missing.value)


def _push_generation(
    config: RepoConfig,
    registry: registry_pb2.Registry,
    drivers: list[int],
    at_minutes: list[int],
) -> None:
    """Pushes rows to `driver_live` as the registry defines it (trips as float64)."""
    from skewless.offline.offline_store import ORIGIN_PUSH, HistoryWriter, commit_append
    from skewless.registry.feature_refs import resolve_view

    plan = resolve_view(registry, "driver_live")
    table = pa.table(
        {
            "driver_id": pa.array(drivers, pa.int64()),
            "event_timestamp": pa.array(
                [T0 + timedelta(minutes=m) for m in at_minutes], pa.timestamp("us", tz="UTC")
            ),
            "created_timestamp": pa.array([None] * len(drivers), pa.timestamp("us", tz="UTC")),
            "conv_rate": pa.array([float(m) for m in at_minutes]),
            "trips": pa.array([m + 0.5 for m in at_minutes]),
            "label": pa.array([f"{d}@{m}" for d, m in zip(drivers, at_minutes, strict=True)]),
        }
    ).cast(plan.history_schema)
    writer = HistoryWriter(config, plan.storage_name, plan.history_schema, origin=ORIGIN_PUSH)
    writer.write(table)
    commit_append(config, plan.storage_name, writer.close())


def _on_disk(config: RepoConfig, table: str) -> list[Path]:
    root = history_dir(config, table)
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())


def test_a_new_generation_reads_no_old_history_and_upkeep_touches_only_it(
    repo: RepoConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    """A breaking change (new generation) on views with Delta history: reads, pins,
    compaction, vacuum and retention all address the new generation's table only."""
    from functools import partial

    from skewless.cli import main
    from skewless.core.errors import FailedPreconditionError, NotFoundError
    from skewless.materialization.retention import sweep_retention
    from skewless.materialization.view_state import has_stored_values
    from skewless.offline.retrieval import read_snapshots, start_retrieval
    from skewless.registry.feature_refs import resolve_feature_refs
    from skewless.registry.registry_diff import plan_changes
    from skewless.registry.registry_store import RegistryStore

    (repo.root / "skewless.yaml").write_text(
        f"project: mat\ndata_dir: .skewless\nonline_store: {{redis_url: '{repo.redis_url}'}}\n"
    )
    old = make_registry(push=True)
    materialize(repo, old, T0, T0 + 2 * DAY, views=["driver_stats"])
    materialize(repo, old, T0, T0 + DAY, views=["driver_stats"])  # replaced files stay on disk
    _push_rows(repo, [3, 1], [50, 10])  # out of order: a compaction would rewrite it
    old_state = {
        name: (DeltaTable(str(history_dir(repo, name))).version(), _on_disk(repo, name))
        for name in ("driver_stats", "driver_live")
    }

    retyped = {
        "conv_rate": VT.VALUE_TYPE_FLOAT64,
        "trips": VT.VALUE_TYPE_FLOAT64,  # INT64 before: the old bytes are not float64
        "label": VT.VALUE_TYPE_STRING,
    }
    planned = plan_changes(
        old,
        make_registry(push=True, feature_types=retyped),
        has_values=partial(has_stored_values, repo),
    )
    new = planned.registry
    assert {v.name: v.generation for v in new.feature_views} == {
        "driver_stats": 1,
        "driver_live": 1,
    }
    assert sorted(planned.rematerialize) == ["driver_live", "driver_stats"]
    RegistryStore(repo.registry_path).save(new)
    stats = resolve_feature_refs(new, ["driver_stats:trips"])
    live = resolve_feature_refs(new, ["driver_live:trips"])

    # Nothing of the old generation is read: not the latest snapshot, not a pinned version.
    with pytest.raises(FailedPreconditionError, match="no offline history") as missing:
        read_snapshots(repo, stats)
    assert missing.value.reason == "NOT_MATERIALIZED"
    with pytest.raises(NotFoundError) as pinned:
        read_snapshots(repo, stats, versions={"driver_stats": old_state["driver_stats"][0]})
    assert "'driver_stats'" in str(pinned.value) and "@" not in str(pinned.value)
    assert not has_stored_values(repo, "driver_stats", 1)

    # The new generation fills its own table; retrieval joins only its rows and types.
    materialize(repo, new, T0, T0 + 2 * DAY, views=["driver_stats"])
    _push_generation(repo, new, [3, 1], [50, 20])
    _push_generation(repo, new, [2], [30])
    assert DeltaTable(str(history_dir(repo, "driver_stats@1"))).version() >= 0
    snapshots = read_snapshots(repo, live)
    assert Path(snapshots["driver_live"].root.path()) == history_dir(repo, "driver_live@1")
    labels = pa.table(
        {
            "driver_id": pa.array([1, 1, 2], pa.int64()),
            "event_timestamp": pa.array(
                [T0 + timedelta(minutes=m) for m in (15, 25, 35)], pa.timestamp("us", tz="UTC")
            ),
        }
    )
    join = start_retrieval(repo, live, labels, label_time_column="event_timestamp", batch_rows=1024)
    try:
        got = join.reader.read_all()
    finally:
        join.close()
    assert got.schema.field("trips").type == pa.float64()
    # Generation 0 had driver 1 at minute 10; generation 1 only from minute 20.
    assert got.column("trips").to_pylist() == [None, 20.5, 30.5]
    join = start_retrieval(
        repo,
        stats,
        labels.slice(0, 1).set_column(
            1,
            "event_timestamp",
            pa.array([T0 + 36 * timedelta(hours=1)], pa.timestamp("us", tz="UTC")),
        ),
        label_time_column="event_timestamp",
        batch_rows=1024,
    )
    try:
        assert join.reader.read_all().column("trips").to_pylist() == [37.0]
    finally:
        join.close()

    # Compaction, vacuum and retention work on generation 1 and name the view.
    capsys.readouterr()
    assert main(["compact", "--repo", str(repo.root), "--views", "driver_live"]) == 0
    out = capsys.readouterr().out
    assert "driver_live: 2 pushed file(s) rewritten as 1" in out and "@" not in out
    assert len(read_files(repo, "driver_live@1")) == 1
    assert main(["vacuum", "--retain", "0", "--repo", str(repo.root)]) == 0
    out = capsys.readouterr().out
    assert "driver_live: 2 file(s) deleted" in out
    assert "driver_stats: 0 file(s) deleted" in out and "@" not in out
    new.feature_views[0].offline_retention.CopyFrom(duration_pb2.Duration(seconds=86_400))
    swept = sweep_retention(repo, new, now=T0 + 10 * DAY)
    assert [(r.view, r.files_removed > 0) for r in swept] == [("driver_stats", True)]
    assert not read_files(repo, "driver_stats@1")
    for name, (version, files) in old_state.items():
        assert DeltaTable(str(history_dir(repo, name))).version() == version, name
        assert _on_disk(repo, name) == files, name


def test_a_server_over_an_old_layout_says_so_at_start(
    repo: RepoConfig, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.integration.served import ServerThread

    _old_layout_store(repo)
    with caplog.at_level("ERROR"):
        server = ServerThread(repo, run_schedules=False).start()
        server.stop()
    assert any("skewless migrate-offline" in r.getMessage() for r in caplog.records)
