"""Upkeep of the offline Delta tables: compaction, vacuum and retention.

Each operation is a Delta operation (`delta_log.commit_actions` or deltalake's vacuum),
safe while servers read and writers commit:

* `compact` rewrites each day's consecutive pushed files as one file in (event time,
  key) order. Pushes arrive in any order and one file per push, which defeats the
  join's proof that history has no ties (one pass over time-ordered rows) and makes it
  open many files; after compaction the fast path applies again. Rows that tie (one key,
  one event time) keep their relative order, and the new file sorts where the first
  rewritten one did, so every retrieval answers exactly as before. The replaced files
  stay for time travel until vacuumed.
* `vacuum` deletes files no version newer than the retention references (and files
  never committed, older than it): pinned versions older than that can no longer be
  read (FAILED_PRECONDITION, not a wrong answer).
* `apply_retention` removes, in one commit, the files whose rows are all older than a
  view's `offline_retention` (whole files: the table keeps at least the retention).

Each takes the table's storage name (`skewless.core.names.storage_name`: callers pass the
view's current generation); results name the view.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import PurePosixPath

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from deltalake.transaction import AddAction, RemoveAction

from skewless.core.config import RepoConfig
from skewless.core.names import EVENT_TIMESTAMP, view_of_storage
from skewless.offline.delta_log import (
    OFFLINE_DIR,
    ORIGIN_PUSH,
    PUSH_SUFFIX,
    HistoryFile,
    Snapshot,
    commit_actions,
    file_add,
    file_remove,
    read_snapshot,
    storage_errors,
    table_location,
)
from skewless.offline.offline_store import (
    StagedFile,
    finish_sink,
    open_sink,
    parquet_options,
    publish_staged,
    staged_file,
    staged_path,
    unpublish,
)

__all__ = ["MaintenanceResult", "apply_retention", "compact", "offline_views", "vacuum"]


@dataclass(frozen=True)
class MaintenanceResult:
    """What one operation did to one view.

    Attributes:
        view: The feature view (its name, not the storage name of its generation).
        files_removed: Files taken out of the table (or deleted, for vacuum).
        files_added: Files written.
        version: The table version after it (None: no table).

    """

    view: str
    files_removed: int
    files_added: int
    version: int | None


def offline_views(config: RepoConfig) -> list[str]:
    """The storage names that have an offline table (every generation of a view), sorted."""
    storage = config.storage
    with storage_errors(storage):
        names = [n for n in storage.list_dirs(OFFLINE_DIR) if not n.startswith("_")]
        return [n for n in names if storage.list_files(f"{OFFLINE_DIR}/{n}/_delta_log")]


def _day(entry: HistoryFile) -> str:
    return str(PurePosixPath(entry.path).parent)


def _push_runs(snapshot: Snapshot) -> list[list[HistoryFile]]:
    """Maximal runs of consecutive pushed files within each day, in path order."""
    runs: list[list[HistoryFile]] = []
    current: list[HistoryFile] = []
    for entry in snapshot.files:  # sorted by path: by day, then write order
        if entry.origin != ORIGIN_PUSH or (current and _day(current[-1]) != _day(entry)):
            if current:
                runs.append(current)
            current = [entry] if entry.origin == ORIGIN_PUSH else []
        else:
            current.append(entry)
    if current:
        runs.append(current)
    return runs


def _ordered(table: pa.Table, keys: list[str]) -> pa.Table:
    """Rows in (event time, keys) order; ties keep their order (a stable sort)."""
    order = [(EVENT_TIMESTAMP, "ascending"), *((k, "ascending") for k in keys)]
    return table.take(pc.sort_indices(table, sort_keys=order))


def compact(config: RepoConfig, view: str, join_keys: list[str]) -> MaintenanceResult:
    """Rewrites each day's runs of pushed files as one file in (event time, key) order."""
    root = table_location(config, view)
    written: list[StagedFile] = []
    counts = [0, 0]

    def plan(snapshot: Snapshot) -> tuple[list[AddAction], list[RemoveAction]]:
        unpublish(root, written)
        written.clear()
        adds, removes = [], []
        for run in _push_runs(snapshot):
            tables = [pq.read_table(root.path(e.path), filesystem=root.filesystem) for e in run]
            merged = pa.concat_tables(tables, promote_options="permissive")
            ordered = _ordered(merged, join_keys)
            if len(run) == 1 and ordered.equals(merged):
                continue  # one file, already in order
            first = PurePosixPath(run[0].path)
            stem = first.name.removesuffix(PUSH_SUFFIX)
            rel = str(first.with_name(f"{stem}-c{uuid.uuid4().hex[:6]}{PUSH_SUFFIX}"))
            sink = open_sink(root, staged_path(root, rel))
            pq.write_table(ordered, sink, **parquet_options(ordered.schema))
            size = finish_sink(root, sink)
            micros = pc.cast(ordered.column(EVENT_TIMESTAMP), pa.int64())
            mm = pc.min_max(micros).as_py()
            item = staged_file(
                root,
                HistoryFile(
                    path=rel,
                    min_event_us=mm["min"],
                    max_event_us=mm["max"],
                    rows=ordered.num_rows,
                    origin=ORIGIN_PUSH,
                    size=size,
                ),
                ordered.schema,
            )
            written.append(item)
            removes += [file_remove(e) for e in run]
        publish_staged(root, written)
        adds = [file_add(root, item.file) for item in written]
        counts[:] = [len(removes), len(adds)]
        return adds, removes

    snapshot = read_snapshot(config, view)
    if snapshot is None:
        return MaintenanceResult(view_of_storage(view), 0, 0, None)
    with storage_errors(root):
        schema = pa.schema(root.open().schema().to_arrow())
    try:
        version = commit_actions(config, view, schema, plan, operation="compact")
    except BaseException as exc:
        unpublish(root, written, exc)
        raise
    return MaintenanceResult(view_of_storage(view), counts[0], counts[1], version)


def vacuum(config: RepoConfig, view: str, retain: timedelta) -> MaintenanceResult:
    """Deletes files that no version within `retain` of now references."""
    root = table_location(config, view)
    snapshot = read_snapshot(config, view)
    if snapshot is None:
        return MaintenanceResult(view_of_storage(view), 0, 0, None)
    hours = int(retain.total_seconds() // 3600)
    with storage_errors(root):
        deleted = root.open().vacuum(
            retention_hours=hours, dry_run=False, enforce_retention_duration=False, full=True
        )
    return MaintenanceResult(view_of_storage(view), len(deleted), 0, snapshot.version)


def apply_retention(
    config: RepoConfig, view: str, retention: timedelta, *, now: datetime | None = None
) -> MaintenanceResult:
    """Removes the view's files whose rows are all older than `retention` (one commit)."""
    current = now or datetime.now(UTC)
    cutoff = current - retention
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    cutoff_us = (cutoff - epoch) // timedelta(microseconds=1)
    removed = [0]

    def plan(snapshot: Snapshot) -> tuple[list[AddAction], list[RemoveAction]]:
        removes = [file_remove(e) for e in snapshot.files if e.max_event_us < cutoff_us]
        removed[0] = len(removes)
        return [], removes

    snapshot = read_snapshot(config, view)
    if snapshot is None:
        return MaintenanceResult(view_of_storage(view), 0, 0, None)
    root = table_location(config, view)
    with storage_errors(root):
        schema = pa.schema(root.open().schema().to_arrow())
    version = commit_actions(config, view, schema, plan, operation="retention")
    return MaintenanceResult(view_of_storage(view), removed[0], 0, version)
