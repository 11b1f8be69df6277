"""The offline store: each feature view's history as Parquet files.

Layout under `<data_dir>/offline/<view>/`: Parquet files (at any depth) whose columns
are the view's join keys, `event_timestamp` (timestamp[us, UTC], never null),
`created_timestamp` (timestamp[us, UTC], may be null) and the view's features with
their declared Arrow types. Files being written end in `.tmp` and are never read.
"""

from __future__ import annotations

from pathlib import Path

from skewless.offline.config import RepoConfig

__all__ = ["CREATED_TIMESTAMP", "EVENT_TIMESTAMP", "history_dir", "history_files"]

EVENT_TIMESTAMP = "event_timestamp"
CREATED_TIMESTAMP = "created_timestamp"


def history_dir(config: RepoConfig, view: str) -> Path:
    """Returns the folder holding one view's history."""
    return config.offline_dir / view


def history_files(config: RepoConfig, view: str) -> list[Path]:
    """Returns the committed Parquet files of one view's history, sorted; [] if none."""
    root = history_dir(config, view)
    if not root.is_dir():
        return []
    return sorted(p for p in root.rglob("*.parquet") if p.is_file())
