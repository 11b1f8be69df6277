"""Freshness: how recently each feature view was materialized.

It shows what the API exposes today: a view's jobs (the newest one, its state, and the
newest window end of a job that succeeded).

The newest event time in the offline history and how far the online store trails it
are not exposed by the API yet; the pages keep a marked place for them, to be filled
from the skew report's freshness figures.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from skewless.console.api import MAX_PAGE_SIZE
from skewless.console.display import to_datetime
from skewless.console.web import api, http_status, render, settle
from skewless.v1 import materialization_service_pb2 as mpb
from skewless.v1 import registry_pb2

__all__ = ["Freshness", "freshness_of", "routes"]

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
    """One view's freshness, from its own jobs."""
    name = request.path_params["name"]
    caller = api(request)
    view = await caller.feature_view(name)
    jobs = await settle(caller.jobs(feature_view=name, page_size=MAX_PAGE_SIZE))
    now = dt.datetime.now(dt.UTC)
    return render(
        request,
        "freshness.html",
        {
            "view": view,
            "fresh": freshness_of(view, jobs.value[0] if jobs.value else [], now),
            "jobs_error": jobs.error,
            "now": now,
            "periods": BEHIND_AFTER_PERIODS,
        },
        status_code=200 if jobs.error is None else http_status(jobs.error.code),
    )


routes = [
    Route("/freshness", freshness_all, name="freshness"),
    Route("/views/{name}/freshness", freshness_view, name="view_freshness"),
]
