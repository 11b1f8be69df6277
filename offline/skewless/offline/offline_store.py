"""The offline store: each feature view's history as Parquet files.

Layout under `<data_dir>/offline/<view>/`: Parquet files (at any depth) whose columns
are the view's join keys, `event_timestamp` (timestamp[us, UTC], never null),
`created_timestamp` (timestamp[us, UTC], may be null) and the view's features with
their declared Arrow types. Files being written end in `.<writer pid>.tmp` and are never
read.

Writers put rows in one file per UTC day of event time, `date=YYYY-MM-DD/<id>.parquet`
(ids start with the UTC write time, so paths sort in write order),
and record every committed file, with its event-time range, in `_manifest.json`. The
manifest is the truth: `history_files` returns exactly the files it lists (and can
prune them by time). A commit (under `_manifest.lock`) renames the staged `.tmp` files
into place, then atomically replaces the manifest, so a crash at any point leaves the
previous manifest and therefore the previous history. Every commit also removes what no
committed state references: files no manifest lists, staged files whose writer process
is gone, and replaced files past their grace period. Writing a window [start, end)
drops the window's earlier rows (whole files inside it; files straddling a bound are
rewritten without the window's rows), so re-running a window replaces it. Pushed rows
are appended and never dropped by a window. A folder without a manifest (history
written by other tools) is read by listing its Parquet files; the first commit adopts
them.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from skewless.core.config import RepoConfig
from skewless.core.names import EVENT_TIMESTAMP

__all__ = [
    "MANIFEST_FILE",
    "HistoryFile",
    "HistoryWriter",
    "StagedFile",
    "commit_append",
    "commit_window",
    "discard",
    "history_dir",
    "history_files",
    "read_manifest",
]

MANIFEST_FILE = "_manifest.json"
_LOCK_FILE = "_manifest.lock"
#: Dropped files stay on disk this long so that queries that listed them can finish.
RETIRE_GRACE_SECONDS = 600.0
#: Staged files without a writer pid in their name (older writers) are removed past this age.
STALE_TMP_SECONDS = 3600.0
_EPOCH_DAY = date(1970, 1, 1)

ORIGIN_WINDOW = "window"
ORIGIN_PUSH = "push"


@dataclass(frozen=True)
class HistoryFile:
    """One committed history file.

    Attributes:
        path: Path relative to the view's history folder.
        min_event_us: Smallest event time in the file (microseconds since the epoch).
        max_event_us: Largest event time in the file.
        rows: Number of rows.
        origin: `window` (materialized; replaced by a re-run) or `push` (appended).

    """

    path: str
    min_event_us: int
    max_event_us: int
    rows: int
    origin: str = ORIGIN_WINDOW


@dataclass(frozen=True)
class StagedFile:
    """A written but uncommitted file (`<path>.tmp` on disk)."""

    file: HistoryFile
    tmp_path: Path


def _staged_path(root: Path, rel: str) -> Path:
    """Where a writer stages `rel`: beside it, named with the writer's pid."""
    return root / f"{rel}.{os.getpid()}.tmp"


def _writer_gone(path: Path, now: float) -> bool:
    """Whether a staged file's writer has exited (so nobody will commit it)."""
    pid_text = path.name.rsplit(".", 2)[-2] if path.name.count(".") >= 2 else ""
    if not pid_text.isdigit():
        with contextlib.suppress(FileNotFoundError):
            return now - path.stat().st_mtime > STALE_TMP_SECONDS
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def discard(staged: list[StagedFile]) -> None:
    """Removes staged files that will not be committed."""
    for item in staged:
        item.tmp_path.unlink(missing_ok=True)


def history_dir(config: RepoConfig, view: str) -> Path:
    """Returns the folder holding one view's history."""
    return config.offline_dir / view


def _to_us(value: datetime | int) -> int:
    if isinstance(value, int):
        return value
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    delta = value - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def read_manifest(config: RepoConfig, view: str) -> list[HistoryFile] | None:
    """Returns the committed files of a view from its manifest; None if it has none."""
    path = history_dir(config, view) / MANIFEST_FILE
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    return [HistoryFile(**entry) for entry in raw["files"]]


def history_files(
    config: RepoConfig,
    view: str,
    *,
    start: datetime | int | None = None,
    end: datetime | int | None = None,
) -> list[Path]:
    """Returns the committed Parquet files of one view's history, sorted; [] if none.

    Args:
        config: The repository.
        view: The feature view.
        start: Keep only files that may hold event times >= start (a datetime, or
            microseconds since the epoch).
        end: Keep only files that may hold event times < end.

    """
    root = history_dir(config, view)
    entries = read_manifest(config, view)
    if entries is None:
        if not root.is_dir():
            return []
        return sorted(p for p in root.rglob("*.parquet") if p.is_file())
    lo = _to_us(start) if start is not None else None
    hi = _to_us(end) if end is not None else None
    return sorted(
        root / e.path
        for e in entries
        if (lo is None or e.max_event_us >= lo) and (hi is None or e.min_event_us < hi)
    )


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class HistoryWriter:
    """Stages rows of one view as `.tmp` Parquet files, one per UTC day of event time.

    Call `write` with record batches in the history schema, then `close` to get the
    staged files for `commit_window` or `commit_append` (or `abort` to remove them).
    """

    def __init__(
        self, config: RepoConfig, view: str, schema: pa.Schema, *, origin: str = ORIGIN_WINDOW
    ) -> None:
        """Prepares a writer; nothing is created until the first row."""
        self.root = history_dir(config, view)
        self.schema = schema
        self.origin = origin
        # Names sort in write order (readers break exact ties by the greatest path).
        self._run = f"{datetime.now(UTC):%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:8]}"
        self._open: dict[int, tuple[pq.ParquetWriter, IO[bytes], str, list[int]]] = {}
        self.rows = 0

    def _writer(self, day: int) -> tuple[pq.ParquetWriter, IO[bytes], str, list[int]]:
        entry = self._open.get(day)
        if entry is None:
            day_text = (_EPOCH_DAY + timedelta(days=day)).isoformat()
            rel = f"date={day_text}/{self._run}.parquet"
            path = _staged_path(self.root, rel)
            path.parent.mkdir(parents=True, exist_ok=True)
            sink = path.open("wb")
            writer = pq.ParquetWriter(sink, self.schema)
            entry = (writer, sink, rel, [2**63 - 1, -(2**63), 0])
            self._open[day] = entry
        return entry

    def write(self, batch: pa.RecordBatch | pa.Table) -> None:
        """Stages rows (any order, any days)."""
        if batch.num_rows == 0:
            return
        table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
        # Days since the epoch, floored (a UTC timestamp's date), exact for any instant.
        days = pc.cast(pc.cast(table.column(EVENT_TIMESTAMP), pa.date32()), pa.int32())
        bounds = pc.min_max(days).as_py()
        day_values = (
            [bounds["min"]] if bounds["min"] == bounds["max"] else pc.unique(days).to_pylist()
        )
        for day in day_values:
            part = table if len(day_values) == 1 else table.filter(pc.equal(days, day))
            part_micros = pc.cast(part.column(EVENT_TIMESTAMP), pa.int64())
            writer, _, _, stats = self._writer(day)
            writer.write_table(part)
            mm = pc.min_max(part_micros).as_py()
            stats[0] = min(stats[0], mm["min"])
            stats[1] = max(stats[1], mm["max"])
            stats[2] += part.num_rows
        self.rows += batch.num_rows

    @property
    def staged_paths(self) -> list[Path]:
        """The staged paths written so far."""
        return [_staged_path(self.root, rel) for _, _, rel, _ in self._open.values()]

    def close(self) -> list[StagedFile]:
        """Finishes and fsyncs every staged file."""
        staged: list[StagedFile] = []
        for writer, sink, rel, (lo, hi, rows) in self._open.values():
            writer.close()
            sink.flush()
            os.fsync(sink.fileno())
            sink.close()
            staged.append(
                StagedFile(
                    file=HistoryFile(
                        path=rel, min_event_us=lo, max_event_us=hi, rows=rows, origin=self.origin
                    ),
                    tmp_path=_staged_path(self.root, rel),
                )
            )
        self._open.clear()
        return staged

    def abort(self) -> None:
        """Removes everything staged."""
        for writer, sink, rel, _ in self._open.values():
            with contextlib.suppress(Exception):
                writer.close()
            sink.close()
            _staged_path(self.root, rel).unlink(missing_ok=True)
        self._open.clear()


@contextlib.contextmanager
def _manifest_lock(root: Path) -> Iterator[None]:
    root.mkdir(parents=True, exist_ok=True)
    with (root / _LOCK_FILE).open("a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _load_state(root: Path) -> tuple[list[HistoryFile], list[dict[str, Any]]]:
    path = root / MANIFEST_FILE
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return _adopt(root), []
    return [HistoryFile(**e) for e in raw["files"]], list(raw.get("retired", []))


def _adopt(root: Path) -> list[HistoryFile]:
    """Lists history written without a manifest (by other tools) as window files."""
    adopted = []
    for path in sorted(root.rglob("*.parquet")):
        table = pq.read_table(path, columns=[EVENT_TIMESTAMP])
        if table.num_rows == 0:
            continue
        mm = pc.min_max(pc.cast(table.column(EVENT_TIMESTAMP), pa.int64())).as_py()
        adopted.append(
            HistoryFile(
                path=str(path.relative_to(root)),
                min_event_us=mm["min"],
                max_event_us=mm["max"],
                rows=table.num_rows,
            )
        )
    return adopted


def _write_manifest(root: Path, files: list[HistoryFile], retired: list[dict[str, Any]]) -> None:
    body = json.dumps(
        {"version": 1, "files": [asdict(f) for f in files], "retired": retired}, indent=1
    )
    tmp = root / (MANIFEST_FILE + ".tmp")
    with tmp.open("w") as handle:
        handle.write(body)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, root / MANIFEST_FILE)
    _fsync_dir(root)


def _rewrite_without(root: Path, entry: HistoryFile, lo: int, hi: int) -> StagedFile | None:
    """Stages a copy of a file without its rows in [lo, hi); None if nothing remains."""
    table = pq.read_table(root / entry.path)
    micros = pc.cast(table.column(EVENT_TIMESTAMP), pa.int64())
    keep = table.filter(pc.or_(pc.less(micros, lo), pc.greater_equal(micros, hi)))
    if keep.num_rows == 0:
        return None
    # Sorts right after the original, so the kept rows keep their place in write order.
    original = Path(entry.path)
    rel = str(original.with_name(f"{original.stem}-kept{uuid.uuid4().hex[:6]}.parquet"))
    tmp = _staged_path(root, rel)
    with tmp.open("wb") as sink:
        pq.write_table(keep, sink)
        sink.flush()
        os.fsync(sink.fileno())
    kept_micros = pc.cast(keep.column(EVENT_TIMESTAMP), pa.int64())
    mm = pc.min_max(kept_micros).as_py()
    return StagedFile(
        file=HistoryFile(
            path=rel,
            min_event_us=mm["min"],
            max_event_us=mm["max"],
            rows=keep.num_rows,
            origin=entry.origin,
        ),
        tmp_path=tmp,
    )


def _clean(
    root: Path, files: list[HistoryFile], retired: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Removes orphans and expired retired files; returns the retired list still kept."""
    now = time.time()
    listed = {f.path for f in files}
    keep_retired = []
    for item in retired:
        if now - float(item["time"]) >= RETIRE_GRACE_SECONDS:
            (root / item["path"]).unlink(missing_ok=True)
        else:
            keep_retired.append(item)
    held = listed | {item["path"] for item in keep_retired}
    for path in root.rglob("*.parquet"):
        if str(path.relative_to(root)) not in held:
            path.unlink(missing_ok=True)  # renamed by a commit that crashed before its manifest
    for path in root.rglob("*.tmp"):
        if path.name != MANIFEST_FILE + ".tmp" and _writer_gone(path, now):
            path.unlink(missing_ok=True)  # staged by a writer that died
    return keep_retired


def _commit(
    root: Path,
    staged: list[StagedFile],
    window: tuple[int, int] | None,
) -> None:
    with _manifest_lock(root):
        files, retired = _load_state(root)
        kept: list[HistoryFile] = []
        dropped: list[HistoryFile] = []
        extra: list[StagedFile] = []
        try:
            for entry in files:
                if window is None or entry.origin == ORIGIN_PUSH:
                    kept.append(entry)
                    continue
                lo, hi = window
                if entry.max_event_us < lo or entry.min_event_us >= hi:
                    kept.append(entry)
                elif entry.min_event_us >= lo and entry.max_event_us < hi:
                    dropped.append(entry)
                else:
                    dropped.append(entry)
                    rewritten = _rewrite_without(root, entry, lo, hi)
                    if rewritten is not None:
                        extra.append(rewritten)
        except BaseException:
            for item in extra:
                item.tmp_path.unlink(missing_ok=True)
            raise
        for item in [*staged, *extra]:
            os.replace(item.tmp_path, root / item.file.path)
        for folder in {(root / item.file.path).parent for item in [*staged, *extra]}:
            _fsync_dir(folder)
        now = time.time()
        retired = retired + [{"path": d.path, "time": now} for d in dropped]
        new_files = kept + [item.file for item in [*staged, *extra]]
        _write_manifest(root, new_files, retired)
        _clean(root, new_files, retired)


def commit_window(
    config: RepoConfig, view: str, start: datetime, end: datetime, staged: list[StagedFile]
) -> None:
    """Atomically replaces the view's materialized rows in [start, end) by the staged files.

    Every staged file must only hold rows inside the window. Pushed rows are kept.
    """
    _commit(history_dir(config, view), staged, (_to_us(start), _to_us(end)))


def commit_append(config: RepoConfig, view: str, staged: list[StagedFile]) -> None:
    """Atomically adds staged files (pushed rows) to the view's history."""
    if staged:
        _commit(history_dir(config, view), staged, None)
