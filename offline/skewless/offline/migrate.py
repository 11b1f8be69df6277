"""Converts an offline store of the old layout (day files and `_manifest.json`) to Delta.

`skewless migrate-offline` runs `migrate_offline`: each view folder without a Delta log
(manifest-committed day files, or loose Parquet files written by other tools) is moved
aside to `<data_dir>/offline/_migrating/<view>`, its rows are rewritten in path order
through the history writer (so file order, hence the join's tie-break, is kept; pushed
files stay pushed) and committed as the view's first Delta version, then the old folder
is removed. An interrupted migration is resumed by running it again.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from skewless.core.config import RepoConfig
from skewless.offline.delta_log import (
    ORIGIN_PUSH,
    ORIGIN_WINDOW,
    check_layout,
    forget_layout_check,
    outdated_views,
)
from skewless.offline.offline_store import (
    HistoryWriter,
    StagedFile,
    commit_append,
    discard,
    history_dir,
)

__all__ = ["MigratedView", "adopt_files", "migrate_offline"]

_ASIDE = "_migrating"


@dataclass(frozen=True)
class MigratedView:
    """One converted view.

    Attributes:
        view: The feature view.
        files: Old files read.
        rows: Rows committed.

    """

    view: str
    files: int
    rows: int


def _old_files(folder: Path) -> list[tuple[Path, str]]:
    """The committed files of an old-layout folder, in path order, with their origin."""
    manifest = folder / "_manifest.json"
    if manifest.exists():
        entries = json.loads(manifest.read_text())["files"]
        return sorted((folder / e["path"], str(e.get("origin", ORIGIN_WINDOW))) for e in entries)
    return [(p, ORIGIN_WINDOW) for p in sorted(folder.rglob("*.parquet")) if p.is_file()]


def _convert(config: RepoConfig, view: str, files: list[tuple[Path, str]]) -> MigratedView:
    staged: list[StagedFile] = []
    rows = 0
    try:
        for path, origin in files:
            table = pq.read_table(path)
            if table.num_rows == 0:
                continue
            writer = HistoryWriter(config, view, table.schema, origin=origin)
            try:
                writer.write(table)
                staged += writer.close()
            except BaseException:
                writer.abort()
                raise
            rows += table.num_rows
        commit_append(config, view, staged)
    finally:
        discard(staged)
    return MigratedView(view=view, files=len(files), rows=rows)


def migrate_offline(config: RepoConfig) -> list[MigratedView]:
    """Converts every old-layout view of the offline store to a Delta table, in place."""
    aside = config.offline_dir / _ASIDE
    for view in outdated_views(config):
        target = aside / view
        if target.exists():
            shutil.rmtree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        history_dir(config, view).rename(target)
    forget_layout_check(config)
    check_layout(config, create=True)
    done = []
    if aside.is_dir():
        for old in sorted(p for p in aside.iterdir() if p.is_dir()):
            table_dir = history_dir(config, old.name)
            if table_dir.exists():
                shutil.rmtree(table_dir)  # left by an interrupted run: convert again
            done.append(_convert(config, old.name, _old_files(old)))
            shutil.rmtree(old)
        aside.rmdir()
    return done


def adopt_files(config: RepoConfig, view: str, paths: list[Path], *, push: bool = False) -> int:
    """Commits Parquet files in the history layout (written elsewhere) to a view's table.

    Rows are rewritten into day files in the given order (as pushed rows when `push`).
    Returns the committed version.
    """
    origin = ORIGIN_PUSH if push else ORIGIN_WINDOW
    _convert(config, view, [(p, origin) for p in paths])
    from skewless.offline.delta_log import read_snapshot

    snapshot = read_snapshot(config, view)
    return -1 if snapshot is None else snapshot.version
