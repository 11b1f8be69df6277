"""Delta Lake tables as data sources: a table folder plus an optional version.

`open_delta_source` reads the table's snapshot (the pinned version, or the latest) as a
pyarrow dataset over exactly the files that version references, which DuckDB scans like
any relation (projection and filters pushed into the scan). Validation at `apply` and
materialization both go through it.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.dataset as ds
from deltalake import DeltaTable
from deltalake.exceptions import DeltaError, TableNotFoundError

from skewless.core.errors import DefinitionError

__all__ = ["delta_source_path", "open_delta_source"]


def delta_source_path(root: Path | None, path: str) -> Path:
    """The table folder of a Delta source (relative paths are under the repository)."""
    folder = Path(path)
    if not folder.is_absolute() and root is not None:
        folder = root / folder
    return folder


def open_delta_source(root: Path | None, name: str, path: str, version: int | None) -> ds.Dataset:
    """The rows of a Delta source's table at `version` (latest when None).

    Raises:
        DefinitionError: `SOURCE_UNREADABLE`: no Delta table there, or no such version.

    """
    folder = delta_source_path(root, path)
    try:
        table = DeltaTable(str(folder), version=version)
        return table.to_pyarrow_dataset()
    except TableNotFoundError as exc:
        raise DefinitionError(
            f"data source {name!r}: no Delta table at {path!r} (a folder with _delta_log)",
            reason="SOURCE_UNREADABLE",
            metadata={"source": name, "path": path},
        ) from exc
    except (DeltaError, OSError, ValueError) as exc:
        what = f"version {version}" if version is not None else "its latest version"
        raise DefinitionError(
            f"data source {name!r}: cannot read {what} of the Delta table at {path!r}: "
            f"{str(exc).splitlines()[0][:200]}",
            reason="SOURCE_UNREADABLE",
            metadata={"source": name, "path": path},
        ) from exc
