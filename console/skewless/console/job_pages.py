"""Materialization jobs: the list, one job with live progress, and the start form.

The list is newest first; the form calls `StartMaterialization`.

Progress is live through `static/console.js`, which polls `/api/jobs/{id}` while a job
is PENDING or RUNNING; without JavaScript the pages show the state at load time and a
reload shows the current one.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from urllib.parse import parse_qs, quote

import grpc
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from skewless.client.errors import SkewlessClientError
from skewless.console.display import job_state, to_datetime, when
from skewless.console.web import api, http_status, render, settle
from skewless.v1 import materialization_service_pb2 as mpb

__all__ = ["JOBS_PAGE_SIZE", "JobForm", "job_json", "parse_instant", "routes"]

#: Jobs per page of the list.
JOBS_PAGE_SIZE = 50
_TERMINAL = {mpb.JOB_STATE_SUCCEEDED, mpb.JOB_STATE_FAILED}


def parse_instant(text: str, what: str) -> dt.datetime:
    """Reads a form's date and time: ISO 8601, UTC unless it names a zone.

    Raises:
        ValueError: The text is not a date and time (the message names the field).

    """
    try:
        moment = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"{what}: {text[:40]!r} is not a date and time (YYYY-MM-DDTHH:MM, UTC)"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


@dataclass
class JobForm:
    """The start form's fields, as submitted."""

    feature_views: list[str] = field(default_factory=list)
    mode: str = "incremental"
    start: str = ""
    end: str = ""

    @classmethod
    def parse(cls, body: bytes) -> JobForm:
        """Reads an `application/x-www-form-urlencoded` body."""
        fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
        return cls(
            feature_views=[v for v in fields.get("feature_views", []) if v],
            mode=(fields.get("mode") or ["incremental"])[0],
            start=(fields.get("start") or [""])[0],
            end=(fields.get("end") or [""])[0],
        )

    def window(self) -> tuple[dt.datetime | None, dt.datetime, bool]:
        """The request's start, end and incremental flag (end defaults to now).

        Raises:
            ValueError: A time does not parse, or a window has no start.

        """
        incremental = self.mode != "window"
        end = parse_instant(self.end, "end") if self.end.strip() else dt.datetime.now(dt.UTC)
        if incremental:
            return None, end, True
        if not self.start.strip():
            raise ValueError("start: a window needs a start (or choose incremental)")
        return parse_instant(self.start, "start"), end, False


def job_json(job: mpb.MaterializationJob) -> dict[str, object]:
    """A job as the live-progress script reads it."""
    return {
        "job_id": job.job_id,
        "state": job_state(job.state),
        "terminal": job.state in _TERMINAL,
        "progress": job.progress,
        "rows_read": job.rows_read,
        "rows_written": job.rows_written,
        "error": job.error,
        "update_time": when(job.update_time),
    }


async def _view_names(request: Request) -> tuple[list[str], SkewlessClientError | None]:
    views = await settle(api(request).feature_views())
    return [v.name for v in views.value or []], views.error


async def job_list(
    request: Request,
    *,
    form: JobForm | None = None,
    form_error: SkewlessClientError | str | None = None,
) -> Response:
    """The newest jobs (optionally of one view), and the start form."""
    view = request.query_params.get("feature_view", "")
    token = request.query_params.get("page_token", "")
    jobs = await settle(
        api(request).jobs(feature_view=view, page_size=JOBS_PAGE_SIZE, page_token=token)
    )
    names, names_error = await _view_names(request)
    status = 200
    if form_error is not None:
        status = 400 if isinstance(form_error, str) else http_status(form_error.code)
    elif jobs.error is not None:
        status = http_status(jobs.error.code)
    return render(
        request,
        "jobs.html",
        {
            "jobs": jobs,
            "feature_view": view,
            "first_page": not token,
            "view_names": names,
            "view_names_error": names_error,
            "form": form or JobForm(feature_views=[view] if view else []),
            "form_error": form_error,
            "now": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M"),
        },
        status_code=status,
    )


async def jobs(request: Request) -> Response:
    """GET lists the jobs; POST starts one and redirects to its page."""
    if request.method == "GET":
        return await job_list(request)
    form = JobForm.parse(await request.body())
    try:
        start, end, incremental = form.window()
    except ValueError as exc:
        return await job_list(request, form=form, form_error=str(exc))
    try:
        job = await api(request).start_materialization(
            form.feature_views, start_time=start, end_time=end, incremental=incremental
        )
    except SkewlessClientError as exc:
        if exc.code == grpc.StatusCode.UNAUTHENTICATED:
            raise  # the sign-in form, in place of the page
        return await job_list(request, form=form, form_error=exc)
    return RedirectResponse(f"/jobs/{quote(job.job_id, safe='')}", status_code=303)


async def job_page(request: Request) -> Response:
    """One job: state, window, rows, progress and error."""
    job = await api(request).job(request.path_params["job_id"])
    return render(
        request,
        "job.html",
        {"job": job, "terminal": job.state in _TERMINAL, "created": to_datetime(job.create_time)},
    )


async def job_api(request: Request) -> Response:
    """One job as JSON, for live progress; a failed call is `{code, message}`."""
    try:
        job = await api(request).job(request.path_params["job_id"])
    except SkewlessClientError as exc:
        code = exc.code.name if exc.code is not None else "UNKNOWN"
        return JSONResponse(
            {"code": code, "message": exc.message}, status_code=http_status(exc.code)
        )
    return JSONResponse(job_json(job), headers={"Cache-Control": "no-store"})


routes = [
    Route("/jobs", jobs, methods=["GET", "POST"], name="jobs"),
    Route("/jobs/{job_id}", job_page, name="job"),
    Route("/api/jobs/{job_id}", job_api, name="job_api"),
]
