"""The one way skewless opens a DuckDB connection.

Every connection: UTC as its time zone (timestamps without zone are read as UTC
everywhere), no automatic extension installs or loads (nothing is downloaded at run
time), and, when given, a memory limit past which it spills to a folder of its own.
Spill folders are per process (`<spill_dir>/<pid>`), so that a crashed process's spill
files are recognised and removed by the next process that opens one, without touching
a live one's. `sandboxed` adds DuckDB's own file-access boundary for SQL a caller sends.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb

__all__ = ["connect", "sandboxed", "spill_folder"]

_cleaned: set[Path] = set()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def spill_folder(spill_dir: Path) -> Path:
    """This process's spill folder under `spill_dir` (created), after removing dead ones."""
    if spill_dir not in _cleaned:
        _cleaned.add(spill_dir)
        with contextlib.suppress(FileNotFoundError):
            for child in spill_dir.iterdir():
                if (
                    child.name.isdigit()
                    and int(child.name) != os.getpid()
                    and not _alive(int(child.name))
                ):
                    shutil.rmtree(child, ignore_errors=True)
    folder = spill_dir / str(os.getpid())
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def connect(
    *,
    memory_limit: str | None = None,
    spill_dir: Path | None = None,
    threads: int | None = None,
    file_search_path: Path | None = None,
) -> duckdb.DuckDBPyConnection:
    """Opens an in-memory DuckDB connection with skewless's settings.

    Args:
        memory_limit: DuckDB's memory limit (e.g. "1GB"); None keeps its default.
        spill_dir: Where to spill past the limit (a per-process folder below it).
        threads: Worker threads; None keeps DuckDB's default (every core).
        file_search_path: Folder relative file names resolve against.

    """
    config: dict[str, Any] = {
        "autoinstall_known_extensions": False,
        "autoload_known_extensions": False,
    }
    if memory_limit:
        config["memory_limit"] = memory_limit
    if spill_dir is not None:
        config["temp_directory"] = str(spill_folder(spill_dir))
    if threads:
        config["threads"] = threads
    if file_search_path is not None:
        config["file_search_path"] = str(file_search_path)
    con = duckdb.connect(config=config)
    try:
        con.execute("SET TimeZone = 'UTC'")
    except BaseException:
        con.close()
        raise
    return con


def sandboxed(
    roots: Sequence[Path], files: Sequence[Path] = (), *, memory_limit: str | None = None
) -> duckdb.DuckDBPyConnection:
    """A connection that can read files under `roots` and the `files` only, locked.

    DuckDB's own boundary (`allowed_directories` / `allowed_paths` with external access
    off, then the configuration locked), so no function, glob or `..` of a query reaches
    past it, and no query can change a setting. Its temp directory is unset, so nothing
    spills and no server folder can be read back from a setting.
    """
    con = connect(memory_limit=memory_limit)
    try:
        dirs = [f"{r}{os.sep}" for r in roots]
        con.execute("SET allowed_directories = $dirs", {"dirs": dirs})
        con.execute("SET allowed_paths = $paths", {"paths": [str(f) for f in files]})
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
    except BaseException:
        con.close()
        raise
    return con
