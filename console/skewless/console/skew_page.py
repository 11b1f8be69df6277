"""The skew report of a feature service: did what was served match what training sees?

One call to `MonitoringService.GetSkewReport` (which needs `read_historical` on the
service). The page draws, per feature, the share of each category as a stacked bar
(server-rendered SVG, with the counts in a table beside it), the lag distribution of
the stale rows per feature and per view, and the examples that did not match.

The form is a GET (range, tolerance, examples per feature), so a report is a link and
works without JavaScript.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from google.protobuf import duration_pb2
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from skewless.console.display import skew_category
from skewless.console.job_pages import parse_instant
from skewless.console.web import api, http_status, render, settle
from skewless.v1 import monitoring_service_pb2 as mpb

__all__ = [
    "BAR_WIDTH",
    "CATEGORIES",
    "LagBar",
    "Segment",
    "SkewForm",
    "lag_bars",
    "routes",
    "segments",
]

#: The categories in enum order, without the `SKEW_CATEGORY_` prefix.
CATEGORIES: tuple[str, ...] = tuple(
    name.removeprefix("SKEW_CATEGORY_")
    for name, number in sorted(mpb.SkewCategory.items(), key=lambda item: item[1])
    if number != 0
)
#: Width of a feature's category bar, in SVG units.
BAR_WIDTH = 240.0
#: Width of the longest lag bar.
LAG_WIDTH = 200.0
#: The smallest width a non-empty category gets, so that one row in a million shows.
_MIN_SEGMENT = 3.0
_QUANTILES = ("p50", "p90", "p99", "max")
_MAX_EXAMPLES = 100


@dataclass(frozen=True)
class Segment:
    """One category's part of a feature's bar.

    Attributes:
        category: The category name (`MATCH`, `VALUE_MISMATCH`, ...).
        count: Its (row, feature) pairs.
        rate: Its share of the feature's rows, in [0, 1].
        x: Where the part starts, in SVG units.
        width: Its width, in SVG units.

    """

    category: str
    count: int
    rate: float
    x: float
    width: float


def segments(feature: mpb.FeatureSkew, width: float = BAR_WIDTH) -> list[Segment]:
    """The non-empty categories of a feature as consecutive parts of one bar of `width`."""
    counts = [(skew_category(c.category), c.count, c.rate) for c in feature.categories if c.count]
    total = sum(count for _, count, _ in counts)
    if total == 0:
        return []
    widths = [max(width * count / total, _MIN_SEGMENT) for _, count, _ in counts]
    scale = width / sum(widths)
    out: list[Segment] = []
    x = 0.0
    for (name, count, rate), w in zip(counts, widths, strict=True):
        out.append(Segment(name, count, rate, round(x, 2), round(w * scale, 2)))
        x += w * scale
    return out


def _seconds(value: duration_pb2.Duration) -> float:
    return value.seconds + value.nanos / 1e9


@dataclass(frozen=True)
class LagBar:
    """One quantile of a lag distribution, as a bar.

    Attributes:
        quantile: `p50`, `p90`, `p99` or `max`.
        value: The lag.
        width: The bar's width, on the page's common scale.

    """

    quantile: str
    value: duration_pb2.Duration
    width: float


def lag_bars(lag: mpb.LagDistribution, longest: float, width: float = LAG_WIDTH) -> list[LagBar]:
    """The quantiles of `lag` as bars, `longest` seconds drawn `width` wide."""
    bars = []
    for quantile in _QUANTILES:
        value: duration_pb2.Duration = getattr(lag, quantile)
        share = _seconds(value) / longest if longest > 0 else 0.0
        bars.append(LagBar(quantile, value, round(width * share, 2)))
    return bars


@dataclass
class SkewForm:
    """The report form's fields, as given in the query string."""

    since: str = ""
    until: str = ""
    tolerance: str = ""
    examples: str = ""

    @classmethod
    def of(cls, request: Request) -> SkewForm:
        """Reads the query string."""
        q = request.query_params
        return cls(
            since=q.get("since", ""),
            until=q.get("until", ""),
            tolerance=q.get("tolerance", ""),
            examples=q.get("examples", ""),
        )

    def parsed(self) -> tuple[dt.datetime | None, dt.datetime | None, float, int]:
        """Start, end, float tolerance and examples per feature.

        Raises:
            ValueError: A field does not parse or is out of range (the message names it).

        """
        start = parse_instant(self.since, "since") if self.since.strip() else None
        end = parse_instant(self.until, "until") if self.until.strip() else None
        tolerance = 0.0
        if self.tolerance.strip():
            try:
                tolerance = float(self.tolerance)
            except ValueError:
                raise ValueError(f"tolerance: {self.tolerance[:20]!r} is not a number") from None
            if not tolerance >= 0:
                raise ValueError("tolerance: must be 0 or more")
        examples = 0
        if self.examples.strip():
            try:
                examples = int(self.examples)
            except ValueError:
                raise ValueError(
                    f"examples: {self.examples[:20]!r} is not a whole number"
                ) from None
            if not 1 <= examples <= _MAX_EXAMPLES:
                raise ValueError(f"examples: from 1 to {_MAX_EXAMPLES} per feature")
        return start, end, tolerance, examples


async def skew_report(request: Request) -> Response:
    """The skew report page of one feature service."""
    name = request.path_params["name"]
    form = SkewForm.of(request)
    context: dict[str, object] = {"name": name, "form": form, "categories": CATEGORIES}
    try:
        start, end, tolerance, examples = form.parsed()
    except ValueError as exc:
        return render(request, "skew.html", {**context, "form_error": str(exc)}, status_code=400)
    outcome = await settle(
        api(request).skew_report(
            name,
            start_time=start,
            end_time=end,
            float_tolerance=tolerance,
            max_examples=examples,
        )
    )
    if outcome.error is not None:
        return render(
            request,
            "skew.html",
            {**context, "report_error": outcome.error},
            status_code=http_status(outcome.error.code),
        )
    report = outcome.value
    assert report is not None
    lags = [f.stale_lag for f in report.features] + [v.lag for v in report.views]
    longest = max((_seconds(lag.max) for lag in lags), default=0.0)
    examples_rows = [(f, e) for f in report.features for e in f.examples]
    examples_rows.sort(key=lambda fe: (-fe[1].request_time.ToNanoseconds(), fe[0].feature_view))
    return render(
        request,
        "skew.html",
        {
            **context,
            "report": report,
            "bars": {(f.feature_view, f.feature): segments(f) for f in report.features},
            "feature_lags": [
                (f, lag_bars(f.stale_lag, longest)) for f in report.features if f.stale_lag.count
            ],
            "view_lags": [(v, lag_bars(v.lag, longest)) for v in report.views],
            "examples_rows": examples_rows,
            "bar_width": BAR_WIDTH,
            "lag_width": LAG_WIDTH,
        },
    )


routes = [Route("/services/{name}/skew", skew_report, name="skew_report")]
