"""Each feature view's history as a Delta Lake table: snapshots, commits, the layout mark.

The offline store under `<data_dir>/offline/` holds one Delta table per view and
generation, named by the view's storage name (`<view>/` or, after a breaking change,
`<view>@<generation>/`: `skewless.core.names.storage_name`; each holds `_delta_log/` plus
Parquet files) and `_layout.json`, the layout version of the store. Every `view` argument
here is such a storage name; messages name the view.

This module is the only place that talks to `deltalake`: it reads a table's
snapshot (latest, a pinned version or the state as of a time) as the list of its files
with their event-time statistics, and commits file actions (adds and removes) as one
Delta commit, retried on conflicts with concurrent writers.

Commits carry no data: skewless writes the Parquet files itself (`offline_store`), so
that file names sort in write order (the join's documented tie-break) and each file
holds one UTC day in (event time, key) order. Every add action records the file's row
count and the minimum and maximum event time (microsecond precision), which is what
pruning reads back. Other engines see a plain partitioned Delta table.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
from deltalake import DeltaTable
from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError
from deltalake.transaction import AddAction, CommitProperties, RemoveAction, Transaction

from skewless.core.config import RepoConfig
from skewless.core.errors import FailedPreconditionError, NotFoundError, SkewlessError
from skewless.core.names import EVENT_DATE, EVENT_TIMESTAMP, view_of_storage
from skewless.core.storage import DataStorage, object_store_error

__all__ = [
    "EVENT_DATE",
    "LAYOUT_FILE",
    "LAYOUT_VERSION",
    "ORIGIN_PUSH",
    "ORIGIN_WINDOW",
    "HistoryFile",
    "Plan",
    "Snapshot",
    "TableLocation",
    "check_layout",
    "commit_actions",
    "file_add",
    "file_remove",
    "origin_of",
    "read_snapshot",
    "storage_errors",
    "table_location",
    "table_uri",
]

#: The offline store's folder (key prefix) in the data dir.
OFFLINE_DIR = "offline"
#: The file in `<data_dir>/offline/` naming the store's layout.
LAYOUT_FILE = "_layout.json"
#: 1 was day-partitioned Parquet committed by `_manifest.json`; 2 is one Delta table a view.
LAYOUT_VERSION = 2
_OLD_MANIFEST = "_manifest.json"
_DELTA_LOG = "_delta_log"

ORIGIN_WINDOW = "window"
ORIGIN_PUSH = "push"
#: Pushed rows live in files whose name ends so (never replaced by a window).
PUSH_SUFFIX = "-push.parquet"
#: Commits of windows carry this application id: two windows of one view committed at
#: once conflict (the loser re-plans against the winner's files).
_WINDOW_APP = "skewless-window"
#: Commit attempts before a writer gives up (each re-reads the table).
_ATTEMPTS = 20
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_DAY = date(1970, 1, 1)


@dataclass(frozen=True)
class TableLocation:
    """Where one view's Delta table lives: a data dir's storage and the table's key.

    Attributes:
        storage: The data dir (a local folder or an object-store prefix).
        key: The table folder's key in it (`offline/<storage name>`).

    """

    storage: DataStorage

    key: str

    def path(self, rel: str = "") -> str:
        """The `filesystem` path of a file of the table (relative path `rel`)."""
        return self.storage.fs_path(f"{self.key}/{rel}" if rel else self.key)

    @property
    def uri(self) -> str:
        """The table's URI for `deltalake`."""
        return self.storage.uri(self.key)

    @property
    def filesystem(self) -> pafs.FileSystem:
        """The pyarrow filesystem `path` is a path of."""
        return self.storage.filesystem

    @property
    def is_local(self) -> bool:
        """Whether the table is in a local folder (DuckDB reads its files directly)."""
        return self.storage.is_local

    def open(self, version: int | None = None) -> DeltaTable:
        """The table (at a version), with the storage's options."""
        return DeltaTable(self.uri, version=version, storage_options=self.storage.storage_options)


def table_location(config: RepoConfig, view: str) -> TableLocation:
    """The location of a view's table (`view` is its storage name)."""
    return TableLocation(config.storage, f"{OFFLINE_DIR}/{view}")


@contextlib.contextmanager
def storage_errors(location: TableLocation | DataStorage) -> Iterator[None]:
    """On object storage, turns a `deltalake` or pyarrow I/O failure into its status.

    (Locally such failures are bugs or full disks and propagate as they are.)
    """
    storage = location.storage if isinstance(location, TableLocation) else location
    if storage.is_local:
        yield
        return
    try:
        yield
    except (SkewlessError, TableNotFoundError, CommitFailedError, FileNotFoundError):
        raise
    except (DeltaError, OSError) as exc:
        bucket = storage.url.removeprefix("s3://").split("/", 1)[0]
        raise object_store_error(exc, bucket) from None


@dataclass(frozen=True)
class HistoryFile:
    """One committed history file.

    Attributes:
        path: Path relative to the view's table folder.
        min_event_us: Smallest event time in the file (microseconds since the epoch).
        max_event_us: Largest event time in the file.
        rows: Number of rows.
        origin: `window` (materialized; replaced by a re-run) or `push` (appended).
        size: Bytes on storage.

    """

    path: str
    min_event_us: int
    max_event_us: int
    rows: int
    origin: str = ORIGIN_WINDOW
    size: int = 0


@dataclass(frozen=True)
class Snapshot:
    """One version of a view's table.

    Attributes:
        version: The Delta table version.
        files: Its files, sorted by path.
        root: The table's location.

    """

    version: int
    files: tuple[HistoryFile, ...]
    root: TableLocation


#: Derives a commit's (adds, removes) from the snapshot it is based on.
Plan = Callable[[Snapshot], tuple[list[AddAction], list[RemoveAction]]]


def origin_of(path: str) -> str:
    """A file's origin, from its name (see `PUSH_SUFFIX`)."""
    return ORIGIN_PUSH if path.endswith(PUSH_SUFFIX) else ORIGIN_WINDOW


def table_uri(root: TableLocation) -> str:
    """The deltalake URI of a table."""
    return root.uri


def _us_text(micros: int) -> str:
    return (_EPOCH + timedelta(microseconds=micros)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _to_us(value: datetime) -> int:
    delta = value.astimezone(UTC) - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def day_text(micros: int) -> str:
    """The UTC day (`YYYY-MM-DD`) of an instant in microseconds since the epoch."""
    return (_EPOCH_DAY + timedelta(days=micros // 86_400_000_000)).isoformat()


def file_add(root: TableLocation, file: HistoryFile) -> AddAction:
    """The add action of a written file (its day partition and event-time statistics)."""
    stats = {
        "numRecords": file.rows,
        "minValues": {EVENT_TIMESTAMP: _us_text(file.min_event_us)},
        "maxValues": {EVENT_TIMESTAMP: _us_text(file.max_event_us)},
        "nullCount": {EVENT_TIMESTAMP: 0},
    }
    size = file.size or int(root.filesystem.get_file_info(root.path(file.path)).size or 0)
    return AddAction(
        path=file.path,
        size=size,
        partition_values={EVENT_DATE: day_text(file.min_event_us)},
        modification_time=int(time.time() * 1000),
        data_change=True,
        stats=json.dumps(stats),
    )


def file_remove(file: HistoryFile) -> RemoveAction:
    """The remove action of a committed file (it stays on disk until vacuumed)."""
    return RemoveAction(
        path=file.path,
        data_change=True,
        deletion_timestamp=int(time.time() * 1000),
        size=file.size or None,
        partition_values={EVENT_DATE: day_text(file.min_event_us)},
    )


# --- the layout mark ---------------------------------------------------------------------

_checked: set[str] = set()
_checked_lock = threading.Lock()


def check_layout(config: RepoConfig, *, create: bool = False) -> None:
    """Refuses an offline store in an older layout; marks a new one (when `create`).

    Raises:
        FailedPreconditionError: `OFFLINE_LAYOUT_OUTDATED`: views in the manifest layout
            (or loose Parquet files) that `skewless migrate-offline` converts, or that a
            re-materialization into an emptied offline folder rebuilds.

    """
    storage = config.storage
    marker = storage.uri(OFFLINE_DIR)
    with _checked_lock:
        if marker in _checked:
            return
    mark = f"{OFFLINE_DIR}/{LAYOUT_FILE}"
    raw = storage.read_bytes(mark)
    version: int | None
    try:
        version = None if raw is None else int(json.loads(raw)["layout"])
    except (ValueError, KeyError, TypeError):
        version = -1
    if version is None:
        outdated = outdated_views(config)
        if outdated:
            raise _outdated(outdated)
        if not create and not (storage.is_local and config.offline_dir.is_dir()):
            return  # nothing stored yet
        body = (json.dumps({"layout": LAYOUT_VERSION, "format": "delta"}) + "\n").encode()
        if storage.is_local:
            storage.write_bytes(mark, body)
        else:
            storage.create(mark, body)  # several servers may mark it at once: one wins
    elif version != LAYOUT_VERSION:
        raise FailedPreconditionError(
            f"the offline store has layout version {version}, this server reads "
            f"{LAYOUT_VERSION}; use the skewless release that wrote it, or empty the data "
            "dir's offline folder and re-run `skewless materialize`",
            reason="OFFLINE_LAYOUT_OUTDATED",
            metadata={"layout": str(version)},
        )
    with _checked_lock:
        _checked.add(marker)


def outdated_views(config: RepoConfig) -> list[str]:
    """Views stored in the manifest layout (or as loose Parquet files), sorted.

    (The manifest layout never lived on object storage: there this is always empty.)
    """
    if not config.storage.is_local:
        return []
    root = config.offline_dir
    if not root.is_dir():
        return []
    out = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("_")):
        if (folder / _DELTA_LOG).is_dir():
            continue
        if (folder / _OLD_MANIFEST).exists() or next(folder.rglob("*.parquet"), None):
            out.append(folder.name)
    return out


def _outdated(views: Sequence[str]) -> FailedPreconditionError:
    return FailedPreconditionError(
        f"the offline store holds {len(views)} view(s) in the old manifest layout "
        f"({', '.join(views[:5])}); run `skewless migrate-offline` to convert them in place, "
        "or empty the data dir's offline folder and re-run `skewless materialize`",
        reason="OFFLINE_LAYOUT_OUTDATED",
        metadata={"feature_views": ",".join(views[:20])},
    )


def forget_layout_check(config: RepoConfig) -> None:
    """Makes the next `check_layout` look again (after a migration)."""
    with _checked_lock:
        _checked.discard(config.storage.uri(OFFLINE_DIR))


# --- snapshots ---------------------------------------------------------------------------

_tables: dict[str, DeltaTable] = {}
_tables_lock = threading.RLock()


def _latest(root: TableLocation, *, refresh: bool = True) -> DeltaTable | None:
    """The table at its latest version (cached per process, updated incrementally).

    With `refresh=False` a cached table is returned as last read (an append needs no
    fresh snapshot: deltalake rebases it onto newer commits).
    """
    uri = root.uri
    with _tables_lock:  # (re-entrant: callers may hold it)
        table = _tables.get(uri)
        if table is not None and not refresh:
            return table
        if table is not None:
            try:
                table.update_incremental()
                return table
            except (DeltaError, OSError):
                _tables.pop(uri, None)  # the table was deleted or replaced: read it afresh
                if not root.is_local:
                    raise  # an outage, not a replaced table: say so (`storage_errors`)
        if root.is_local and not root.storage.local_path(f"{root.key}/{_DELTA_LOG}").is_dir():
            return None
        try:
            table = root.open()
        except TableNotFoundError:
            return None
        _tables[uri] = table
        return table


def _files_of(table: DeltaTable) -> tuple[HistoryFile, ...]:
    actions = pa.table(table.get_add_actions(flatten=True))
    if actions.num_rows == 0:
        return ()
    paths = actions.column("path").to_pylist()
    rows = actions.column("num_records").to_pylist()
    sizes = actions.column("size_bytes").to_pylist()
    names = actions.schema.names
    lo_name, hi_name = f"min.{EVENT_TIMESTAMP}", f"max.{EVENT_TIMESTAMP}"
    if lo_name in names and hi_name in names:
        lo = actions.column(lo_name).cast(pa.int64()).to_pylist()
        hi = actions.column(hi_name).cast(pa.int64()).to_pylist()
    else:
        lo = hi = [None] * len(paths)
    out = [
        HistoryFile(
            path=p,
            # Files without statistics (written by other tools) are never pruned.
            min_event_us=-(2**63) if a is None else int(a),
            max_event_us=2**63 - 1 if b is None else int(b),
            rows=-1 if n is None else int(n),
            origin=origin_of(p),
            size=int(s or 0),
        )
        for p, n, s, a, b in zip(paths, rows, sizes, lo, hi, strict=True)
    ]
    return tuple(sorted(out, key=lambda f: f.path))


def read_snapshot(
    config: RepoConfig,
    view: str,
    *,
    version: int | None = None,
    as_of: datetime | None = None,
) -> Snapshot | None:
    """A view's table at its latest version, at `version`, or as of `as_of`; None if none.

    Raises:
        NotFoundError: `OFFLINE_VERSION_NOT_FOUND`: the pinned version (or time) is not
            in the table's log (before its first commit, after its last, or expired).
        FailedPreconditionError: `OFFLINE_LAYOUT_OUTDATED` (see `check_layout`).

    """
    root = table_location(config, view)
    with storage_errors(root):
        return _read_snapshot(config, root, view, version, as_of)


def _read_snapshot(
    config: RepoConfig,
    root: TableLocation,
    view: str,
    version: int | None,
    as_of: datetime | None,
) -> Snapshot | None:
    check_layout(config)
    table = _latest(root)
    if table is None:
        if version is not None or as_of is not None:
            raise _no_version(view, version, as_of)
        return None
    with _tables_lock:
        latest = Snapshot(version=table.version(), files=_files_of(table), root=root)
    if version is None and as_of is None:
        return latest
    if version == latest.version:
        return latest
    if version is not None and version > latest.version:
        raise _no_version(view, version, as_of)
    try:
        pinned = root.open(version) if version is not None else None
        if pinned is None:
            pinned = root.open()
            assert as_of is not None
            pinned.load_as_version(as_of.astimezone(UTC))
    except (DeltaError, OSError, ValueError) as exc:
        raise _no_version(view, version, as_of) from exc
    return Snapshot(version=pinned.version(), files=_files_of(pinned), root=root)


def _no_version(table: str, version: int | None, as_of: datetime | None) -> NotFoundError:
    view = view_of_storage(table)
    what = f"version {version}" if version is not None else f"a version as of {as_of}"
    return NotFoundError(
        f"feature view {view!r} has no offline {what}: it is before the first commit, "
        "after the latest, or its log entry has expired",
        reason="OFFLINE_VERSION_NOT_FOUND",
        metadata={"feature_view": view},
    )


# --- commits -----------------------------------------------------------------------------


def _create(root: TableLocation, schema: pa.Schema) -> None:
    """Creates an empty table (losing a creation race to another writer is fine)."""
    try:
        DeltaTable.create(
            root.uri,
            schema,
            partition_by=[EVENT_DATE],
            mode="ignore",
            configuration={"delta.checkpointInterval": "50"},
            storage_options=root.storage.storage_options,
        )
    except DeltaError:
        if not root.storage.list_files(f"{root.key}/{_DELTA_LOG}"):
            raise


def _table_schema(schema: pa.Schema) -> pa.Schema:
    fields = [f for f in schema if f.name != EVENT_DATE]
    return pa.schema([*fields, pa.field(EVENT_DATE, pa.date32())])


def _add_missing_columns(table: DeltaTable, schema: pa.Schema) -> None:
    """Adds the columns a newer view definition writes to the table schema.

    (A column whose type changed keeps its first type in the table schema: skewless
    reads each file with its own types; other engines may refuse such a table.)
    """
    from deltalake.schema import Schema

    current = pa.schema(table.schema().to_arrow())
    new = [f for f in schema if f.name not in current.names]
    if new:
        table.alter.add_columns(Schema.from_arrow(pa.schema(new)).fields)


def commit_actions(
    config: RepoConfig,
    view: str,
    schema: pa.Schema,
    plan: Plan,
    *,
    operation: str,
    window: bool = False,
    needs_snapshot: bool = True,
) -> int:
    """Commits what `plan` derives from the latest snapshot as one Delta commit.

    `plan` is called again on a fresh snapshot after each conflict with a concurrent
    writer (appends alone never conflict; two windows, or two removals of one file, do).

    Args:
        config: The repository.
        view: The feature view.
        schema: The history schema of the files added.
        plan: Returns (adds, removes) for a snapshot; both empty commits nothing.
        operation: Recorded in the commit as `skewless.operation`.
        window: Mark the commit as a window's (windows of one view serialize).
        needs_snapshot: False for a plain append: `plan` gets the cached version and no
            files (saves a log read and a file listing per push).

    Returns:
        The committed version (the read one when nothing was committed).

    Raises:
        FailedPreconditionError: `OFFLINE_COMMIT_CONFLICT` after too many conflicts.

    """
    root = table_location(config, view)
    with storage_errors(root):
        return _commit(config, root, view, schema, plan, operation, window, needs_snapshot)


def _commit(
    config: RepoConfig,
    root: TableLocation,
    view: str,
    schema: pa.Schema,
    plan: Plan,
    operation: str,
    window: bool,
    needs_snapshot: bool,
) -> int:
    check_layout(config, create=True)
    table_schema = _table_schema(schema)
    for attempt in range(_ATTEMPTS):
        table = _latest(root, refresh=needs_snapshot or attempt > 0)
        if table is None:
            _create(root, table_schema)
            continue
        with _tables_lock:
            try:
                _add_missing_columns(table, table_schema)
            except CommitFailedError:
                continue
            files = _files_of(table) if needs_snapshot else ()
            snapshot = Snapshot(version=table.version(), files=files, root=root)
            seen = table.transaction_version(_WINDOW_APP) if window else None
            current_schema = pa.schema(table.schema().to_arrow())
        adds, removes = plan(snapshot)
        if not adds and not removes:
            return snapshot.version
        apps = None
        if window:
            apps = [Transaction(_WINDOW_APP, (seen or 0) + 1, int(time.time() * 1000))]
        with _tables_lock:
            try:
                table.create_write_transaction(
                    [*adds, *removes],
                    mode="append",
                    schema=current_schema,
                    partition_by=[EVENT_DATE],
                    commit_properties=CommitProperties(
                        custom_metadata={"skewless.operation": operation},
                        max_commit_retries=50,
                        app_transactions=apps,
                    ),
                )
            except CommitFailedError:
                conflicted = True
            else:
                conflicted = False
                table.update_incremental()
                committed = int(table.version())
        if conflicted:
            time.sleep(min(0.05 * (attempt + 1), 0.5))
            continue
        return committed
    raise FailedPreconditionError(
        f"feature view {view_of_storage(view)!r}: the offline commit kept conflicting with "
        "concurrent writers; retry it",
        reason="OFFLINE_COMMIT_CONFLICT",
        metadata={"feature_view": view_of_storage(view)},
    )


def table_history(config: RepoConfig, view: str) -> list[dict[str, Any]]:
    """The table's commit history, newest first (empty without a table)."""
    root = table_location(config, view)
    with storage_errors(root):
        table = _latest(root)
        return [] if table is None else table.history()
