"""`skewless materialize`, `skewless materialize-incremental` and `skewless jobs`.

A failed job exits with 1 (`skewless.cli.exit_codes`); long work shows a progress bar
with rows, rate and ETA (tqdm, on stderr).
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tqdm import tqdm

from skewless.cli.exit_codes import EXIT_FAILED, EXIT_OK
from skewless.core.config import RepoConfig, load_repo_config
from skewless.materialization.jobs import JobRecord, JobState, JobStore, Trigger, run_job, start_job
from skewless.materialization.pipeline import Phase, Progress
from skewless.online.embedded_redis import online_store_config
from skewless.registry.registry_store import RegistryStore
from skewless.v1 import registry_pb2

__all__ = ["add_commands", "parse_time"]


def parse_time(text: str) -> datetime:
    """Parses an ISO 8601 date or time (`2024-05-01`, `2024-05-01T12:00:00Z`) or `now`.

    A time without zone is UTC.

    Raises:
        ValueError: Not a date or time; the message shows the accepted forms.

    """
    if text.strip().lower() == "now":
        return datetime.now(UTC)
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time: use ISO 8601 such as 2024-05-01 or "
            "2024-05-01T12:00:00Z, or 'now'"
        ) from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class _Bar:
    """One tqdm bar per view: rows computed, rate and ETA."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bar: Any = None
        self.view = ""

    def __call__(self, report: Progress) -> None:
        if not self.enabled:
            return
        if report.view != self.view:
            self.close()
            self.view = report.view
            self.bar = tqdm(
                total=report.rows_total or None,
                desc=f"{report.view} [{report.view_index + 1}/{report.view_count}]",
                unit="rows",
                unit_scale=True,
                file=sys.stderr,
                dynamic_ncols=True,
            )
        if self.bar is None:
            return
        if report.phase == Phase.COMPUTE:
            self.bar.total = report.rows_total
            self.bar.n = report.rows_done
            self.bar.refresh()
        elif report.phase == Phase.ONLINE:
            self.bar.set_postfix_str(f"online {report.rows_done:,} keys", refresh=True)
        elif report.phase == Phase.DONE:
            self.bar.total = max(report.rows_total, 1)
            self.bar.n = report.rows_total
            self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _load(
    repo: str | Path, redis_url: str | None = None
) -> tuple[RepoConfig, registry_pb2.Registry]:
    config = load_repo_config(repo)
    if redis_url:
        config = dataclasses.replace(config, redis_url=redis_url)
    return config, RegistryStore(config.storage).require()


def _run(
    config: RepoConfig,
    registry: registry_pb2.Registry,
    views: Sequence[str] | None,
    start: datetime | None,
    end: datetime,
    *,
    incremental: bool,
    progress_bar: bool,
) -> int:
    started = start_job(
        config,
        registry,
        views or (),
        window_start=start,
        window_end=end,
        incremental=incremental,
        trigger=Trigger.CLI,
    )
    bar = _Bar(progress_bar)
    try:
        final = run_job(
            config,
            registry,
            JobStore(config),
            started.record,
            locks=started.locks,
            progress=bar,
        )
    finally:
        bar.close()
    if final.state != JobState.SUCCEEDED:
        error = final.error.message if final.error else "unknown error"
        print(f"materialization job {final.job_id} failed: {error}", file=sys.stderr)
        return EXIT_FAILED
    print(
        f"materialized {len(final.feature_views)} feature view(s): {final.rows_read:,} rows "
        f"computed, {final.rows_written:,} written to the history (job {final.job_id})"
    )
    return EXIT_OK


def _materialize_command(
    repo: str | Path,
    start: str,
    end: str,
    views: Sequence[str] | None = None,
    *,
    progress_bar: bool = True,
    redis_url: str | None = None,
) -> int:
    """`skewless materialize START END [--views V ...]`; returns the exit code."""
    config, registry = _load(repo, redis_url)
    begin, finish = parse_time(start), parse_time(end)
    if finish < begin:
        raise ValueError(f"END ({end}) is before START ({start})")
    with online_store_config(config) as (config, _):
        return _run(
            config, registry, views, begin, finish, incremental=False, progress_bar=progress_bar
        )


def _materialize_incremental_command(
    repo: str | Path,
    end: str | None = None,
    views: Sequence[str] | None = None,
    *,
    progress_bar: bool = True,
    redis_url: str | None = None,
) -> int:
    """`skewless materialize-incremental [END] [--views V ...]`; END defaults to now."""
    config, registry = _load(repo, redis_url)
    finish = parse_time(end or "now")
    with online_store_config(config) as (config, _):
        return _run(
            config, registry, views, None, finish, incremental=True, progress_bar=progress_bar
        )


def _format(record: JobRecord) -> str:
    start = record.window_start.isoformat() if record.window_start else "watermark"
    line = (
        f"{record.job_id}  {record.state.value:<9}  {','.join(record.feature_views)}  "
        f"[{start}, {record.window_end.isoformat()})  rows {record.rows_read:,}/"
        f"{record.rows_written:,}  {record.progress:.0%}  ({record.trigger})"
    )
    return line + (f"\n    error: {record.error.message}" if record.error else "")


def _jobs_command(repo: str | Path, feature_view: str = "", limit: int = 20) -> int:
    """`skewless jobs REPO [--view V] [--limit N]`: lists jobs, newest first."""
    config = load_repo_config(repo)
    records = JobStore(config).list(feature_view)[: max(limit, 0) or None]
    if not records:
        print("no materialization jobs")
    for record in records:
        print(_format(record))
    return EXIT_OK


def add_commands(commands: Any) -> None:
    """Adds `materialize`, `materialize-incremental` and `jobs` to the parser's subcommands."""
    p = commands.add_parser(
        "materialize", help="compute feature views over [START, END) into both stores"
    )
    p.add_argument("start", help="window start (inclusive), ISO 8601; UTC if no zone")
    p.add_argument("end", help="window end (exclusive), ISO 8601 or 'now'")
    p.add_argument("--repo", default=".", help="feature repository folder (default: .)")
    p.add_argument("--views", nargs="+", default=None, help="only these feature views")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--redis-url", default=None, help="online store URL (overrides skewless.yaml)")
    p.set_defaults(
        func=lambda a: _materialize_command(
            a.repo, a.start, a.end, a.views, progress_bar=not a.no_progress, redis_url=a.redis_url
        )
    )
    p = commands.add_parser(
        "materialize-incremental", help="continue each feature view from its watermark to END"
    )
    p.add_argument("end", nargs="?", default=None, help="window end (default: now)")
    p.add_argument("--repo", default=".", help="feature repository folder (default: .)")
    p.add_argument("--views", nargs="+", default=None, help="only these feature views")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--redis-url", default=None, help="online store URL (overrides skewless.yaml)")
    p.set_defaults(
        func=lambda a: _materialize_incremental_command(
            a.repo, a.end, a.views, progress_bar=not a.no_progress, redis_url=a.redis_url
        )
    )
    p = commands.add_parser("jobs", help="list materialization jobs, newest first")
    p.add_argument("--repo", default=".", help="feature repository folder (default: .)")
    p.add_argument("--view", default="", help="only jobs including this feature view")
    p.add_argument("--limit", type=int, default=20, help="at most this many (0: all)")
    p.set_defaults(func=lambda a: _jobs_command(a.repo, a.view, a.limit))
