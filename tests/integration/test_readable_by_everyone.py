"""Every engine reads exactly what skewless committed: deltalake, DuckDB, Polars."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from deltalake import DeltaTable

from skewless.core.config import RepoConfig
from skewless.materialization.pipeline import materialize
from skewless.offline.maintenance import compact
from skewless.offline.offline_store import history_dir, history_files
from tests.integration.matfixtures import T0, driver_rows, make_config, make_registry, write_source
from tests.integration.test_time_travel import push

DAY = timedelta(days=1)
ROOT = Path(__file__).resolve().parents[2]
ORDER = [("event_timestamp", "ascending"), ("driver_id", "ascending"), ("label", "ascending")]

_KILLED = """
import os, signal, sys
from pathlib import Path
from datetime import timedelta
from skewless.materialization.pipeline import materialize
from skewless.offline import offline_store
from tests.integration.matfixtures import T0, make_config, make_registry
real = offline_store.commit_actions
def die(config, view, schema, plan, **kw):
    plan(offline_store.read_snapshot(config, view))  # its files renamed into place ...
    os.kill(os.getpid(), signal.SIGKILL)  # ... and killed before the Delta commit
offline_store.commit_actions = die
config = make_config(Path(sys.argv[1]), sys.argv[2])
materialize(config, make_registry(), T0, T0 + timedelta(days=2))
"""


def skewless_rows(config: RepoConfig) -> pa.Table:
    """The rows skewless's retrieval reads: the latest snapshot's files."""
    files = history_files(config, "driver_stats")
    return pa.concat_tables(pq.read_table(f) for f in files).sort_by(ORDER)


def test_deltalake_duckdb_and_polars_see_exactly_the_committed_rows(
    tmp_path: Path, redis_url: str
) -> None:
    config = make_config(tmp_path / "repo", redis_url)
    write_source(config, driver_rows())
    registry = make_registry()
    materialize(config, registry, T0, T0 + 2 * DAY)
    materialize(config, registry, T0 + timedelta(hours=6), T0 + timedelta(hours=30))  # re-run
    push(config, [1, 2, 3], T0 + timedelta(hours=3), 0.5)
    push(config, [9, 8], T0 + timedelta(hours=1), 1.5)
    compact(config, "driver_stats", ["driver_id"])
    changed = driver_rows()
    write_source(config, changed.set_column(5, "label", pc.utf8_upper(changed["label"])))
    killed = subprocess.run(
        [sys.executable, "-c", _KILLED, str(config.root), redis_url],
        cwd=ROOT,
        capture_output=True,
        timeout=120,
    )
    assert killed.returncode == -9
    root = history_dir(config, "driver_stats")
    on_disk = sorted(root.rglob("*.parquet"))
    expected = skewless_rows(config)
    assert len(on_disk) > len(history_files(config, "driver_stats"))  # replaced and orphaned
    assert expected.num_rows == 20 * 48 + 5
    assert "DRIVER" not in "".join(expected["label"].to_pylist())  # the killed run is unseen

    table = DeltaTable(str(root))
    by_deltalake = pa.table(table.to_pyarrow_table())
    days = pc.cast(by_deltalake["event_timestamp"], pa.date32())
    assert by_deltalake["event_date"].equals(days)  # the partition column: the UTC day
    assert by_deltalake.drop_columns(["event_date"]).sort_by(ORDER).equals(expected)

    files = table.file_uris()
    sql = f"SELECT * FROM read_parquet({files!r}, hive_partitioning = false)"
    by_duckdb = duckdb.connect().sql(sql).to_arrow_table()
    assert by_duckdb.sort_by(ORDER).cast(expected.schema).equals(expected)

    by_polars = pl.read_delta(str(root)).to_arrow()
    assert by_polars.num_rows == expected.num_rows
    polars_rows = by_polars.drop_columns(["event_date"]).sort_by(ORDER)
    assert polars_rows.cast(expected.schema).equals(expected)

    # A pinned earlier version reads the same way in every engine.
    first = DeltaTable(str(root), version=1)
    assert pa.table(first.to_pyarrow_table()).num_rows == 20 * 48
    assert pl.read_delta(str(root), version=1).height == 20 * 48
