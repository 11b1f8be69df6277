"""Freshness: how recently each feature view was materialized, and how far online trails.

Per view: its newest job and state and the newest window end of a job that succeeded
(`ListMaterializationJobs`); its watermark and the newest event time in its offline
history (`GetFeatureViewFreshness`); and, for each feature service that serves the view
with logging on, how far the served rows trailed the offline history over the last
`LAG_WINDOW` (the `ViewFreshness` figures of `GetSkewReport`). The list of every view
shows the jobs only (one call for all views).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from skewless.client.errors import SkewlessClientError
from skewless.console.api import MAX_PAGE_SIZE
from skewless.console.display import to_datetime
from skewless.console.web import api, http_status, render, settle
from skewless.v1 import materialization_service_pb2 as mpb
from skewless.v1 import monitoring_service_pb2, registry_pb2

__all__ = ["LAG_WINDOW", "Freshness", "OnlineLag", "freshness_of", "routes"]

#: The span of served calls whose skew report gives a view's online lag.
LAG_WINDOW = dt.timedelta(hours=24)

#: How many schedule periods may pass after the newest window end before a scheduled
#: view is shown as behind schedule.
BEHIND_AFTER_PERIODS = 2


@dataclass(frozen=True)
class Freshness:
    """A view's freshness as far as its jobs tell.

    Attributes:
        view: The feature view.
        last_job: Its newest job (any state), None when it has none.
        last_success: Its newest job that succeeded.
        window_end: The latest window end among its succeeded jobs.
        behind: For a scheduled view: whether more than `BEHIND_AFTER_PERIODS` periods
            passed since `window_end` (or it never succeeded).

    """

    view: registry_pb2.FeatureView
    last_job: mpb.MaterializationJob | None
    last_success: mpb.MaterializationJob | None
    window_end: dt.datetime | None
    behind: bool | None


def freshness_of(
    view: registry_pb2.FeatureView,
    jobs: Iterable[mpb.MaterializationJob],
    now: dt.datetime,
) -> Freshness:
    """Summarizes a view's jobs (newest first, any subset that includes the view's)."""
    mine = [j for j in jobs if view.name in j.feature_views]
    succeeded = [j for j in mine if j.state == mpb.JOB_STATE_SUCCEEDED]
    ends = [to_datetime(j.window_end_time) for j in succeeded]
    window_end = max((e for e in ends if e is not None), default=None)
    period = view.schedule.seconds + view.schedule.nanos / 1e9
    behind: bool | None = None
    if period > 0:
        behind = window_end is None or (now - window_end).total_seconds() > (
            BEHIND_AFTER_PERIODS * period
        )
    return Freshness(
        view=view,
        last_job=mine[0] if mine else None,
        last_success=succeeded[0] if succeeded else None,
        window_end=window_end,
        behind=behind,
    )


@dataclass(frozen=True)
class OnlineLag:
    """How far one feature service's served rows of a view trailed the offline history.

    Attributes:
        service: The feature service (logging on).
        figures: The view's `ViewFreshness` in the service's skew report; None on error
            or when the report has no entry for the view.
        logged_rows: The logged entity rows the report read.
        error: The failed report call, if it failed.

    """

    service: str
    figures: monitoring_service_pb2.ViewFreshness | None
    logged_rows: int
    error: SkewlessClientError | None


def _logged_services(
    services: Iterable[registry_pb2.FeatureService], view: str
) -> list[registry_pb2.FeatureService]:
    return [
        s
        for s in services
        if s.logging.sample_rate > 0 and view in {p.feature_view for p in s.projections}
    ]


async def freshness_all(request: Request) -> Response:
    """Every view's freshness, from the newest jobs (one page of the job list)."""
    caller = api(request)
    views = await caller.feature_views()
    jobs = await settle(caller.jobs(page_size=MAX_PAGE_SIZE))
    now = dt.datetime.now(dt.UTC)
    rows = [freshness_of(v, jobs.value[0] if jobs.value else [], now) for v in views]
    return render(
        request,
        "freshness_all.html",
        {"rows": rows, "jobs_error": jobs.error, "job_window": MAX_PAGE_SIZE, "now": now},
        status_code=200 if jobs.error is None else http_status(jobs.error.code),
    )


async def freshness_view(request: Request) -> Response:
    """One view's freshness: its jobs, watermark, history and online lag."""
    name = request.path_params["name"]
    caller = api(request)
    view = await caller.feature_view(name)
    jobs, stores, services = await asyncio.gather(
        settle(caller.jobs(feature_view=name, page_size=MAX_PAGE_SIZE)),
        settle(caller.view_freshness(name)),
        settle(caller.feature_services()),
    )
    now = dt.datetime.now(dt.UTC)
    logged = _logged_services(services.value or [], name)
    reports = await asyncio.gather(
        *(
            settle(caller.skew_report(s.name, start_time=now - LAG_WINDOW, max_examples=1))
            for s in logged
        )
    )
    lags = []
    for service, report in zip(logged, reports, strict=True):
        figures = None
        if report.value is not None:
            figures = next((v for v in report.value.views if v.feature_view == name), None)
        rows = report.value.logged_rows if report.value is not None else 0
        lags.append(OnlineLag(service.name, figures, rows, report.error))
    return render(
        request,
        "freshness.html",
        {
            "view": view,
            "fresh": freshness_of(view, jobs.value[0] if jobs.value else [], now),
            "jobs_error": jobs.error,
            "stores": stores,
            "services_error": services.error,
            "lags": lags,
            "lag_window": LAG_WINDOW,
            "now": now,
            "periods": BEHIND_AFTER_PERIODS,
        },
        status_code=200 if jobs.error is None else http_status(jobs.error.code),
    )


routes = [
    Route("/freshness", freshness_all, name="freshness"),
    Route("/views/{name}/freshness", freshness_view, name="view_freshness"),
]
