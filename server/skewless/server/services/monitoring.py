"""`skewless.v1.MonitoringService`: the skew report, on request and on a schedule.

`GetSkewReport` runs `skewless.offline.skew.skew_report` (the one implementation the CLI
runs too) in a worker thread. `SkewReportSchedule` runs it for every feature service
whose `logging.report_schedule` is set, over the last period, and publishes the result
as Prometheus gauges:

- `skewless_skew_rate{feature_service, feature_view, feature, category}`: the share of
  logged rows in each category;
- `skewless_skew_mismatch_rate{feature_service}`: the share neither MATCH nor
  EXPECTED_EMPTY (what `--fail-above` compares);
- `skewless_online_lag_seconds{feature_service, feature_view, quantile}`: how far the
  served rows trailed the offline history at request time (p50, p90, p99);
- `skewless_skew_report_rows{feature_service}`: logged rows the last report covered.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import grpc
from prometheus_client import Gauge

from skewless.core.errors import InvalidArgumentError
from skewless.offline.skew import CATEGORY_NAMES, skew_report
from skewless.server.auth.permissions import Action, Resource
from skewless.server.context import ServerContext
from skewless.server.request_fields import timestamp_argument
from skewless.server.rpc import UnaryHandler, label_call
from skewless.v1 import monitoring_service_pb2, registry_pb2

__all__ = ["MonitoringServicer", "SkewReportSchedule", "publish_report"]

_log = logging.getLogger(__name__)
_pb = monitoring_service_pb2

SKEW_RATE = Gauge(
    "skewless_skew_rate",
    "Share of logged rows per skew category, from the last scheduled skew report.",
    ["feature_service", "feature_view", "feature", "category"],
)
MISMATCH_RATE = Gauge(
    "skewless_skew_mismatch_rate",
    "Share of logged (row, feature) pairs neither MATCH nor EXPECTED_EMPTY, last report.",
    ["feature_service"],
)
ONLINE_LAG = Gauge(
    "skewless_online_lag_seconds",
    "How far served rows trailed the offline history at request time, last report.",
    ["feature_service", "feature_view", "quantile"],
)
REPORT_ROWS = Gauge(
    "skewless_skew_report_rows",
    "Logged entity rows the last scheduled skew report covered.",
    ["feature_service"],
)


def _micros(value: Any, field: str) -> int:
    timestamp_argument(value, field)  # refuses what google.protobuf.Timestamp does not allow
    return int(value.seconds) * 1_000_000 + int(value.nanos) // 1000


def publish_report(report: _pb.GetSkewReportResponse) -> None:
    """Sets the gauges of one feature service from a report."""
    service = report.feature_service
    for feature in report.features:
        for count in feature.categories:
            SKEW_RATE.labels(
                service, feature.feature_view, feature.feature, CATEGORY_NAMES[count.category]
            ).set(count.rate)
    MISMATCH_RATE.labels(service).set(report.mismatch_rate)
    REPORT_ROWS.labels(service).set(report.logged_rows)
    for view in report.views:
        for name, value in (("p50", view.lag.p50), ("p90", view.lag.p90), ("p99", view.lag.p99)):
            ONLINE_LAG.labels(service, view.feature_view, name).set(
                value.ToMicroseconds() / 1e6 if view.lag.count else 0.0
            )


class MonitoringServicer:
    """Serves `GetSkewReport`."""

    def __init__(self, ctx: ServerContext) -> None:
        """Binds the servicer to the server's shared state."""
        self.ctx = ctx

    def handlers(self) -> dict[str, UnaryHandler]:
        """The handler of each RPC, for `skewless.server.rpc.register_service`."""
        return {"GetSkewReport": self.get_skew_report}

    async def get_skew_report(
        self, request: _pb.GetSkewReportRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> _pb.GetSkewReportResponse:
        """Computes the skew report of one feature service (see the proto)."""
        if not request.feature_service:
            raise InvalidArgumentError(
                "feature_service is required: name the feature service whose log to check",
                field="feature_service",
                reason="MISSING_FEATURE_SERVICE",
            )
        access = self.ctx.access
        if access.enabled:
            access.require(Action.READ_HISTORICAL, (Resource.service(request.feature_service),))
        registry = self.ctx.registry.current
        start = (
            _micros(request.start_time, "start_time") if request.HasField("start_time") else None
        )
        end = _micros(request.end_time, "end_time") if request.HasField("end_time") else None
        report = await asyncio.to_thread(
            skew_report,
            self.ctx.config,
            registry,
            request.feature_service,
            start_us=start,
            end_us=end,
            float_tolerance=request.float_tolerance,
            max_examples=request.max_examples,
        )
        label_call(request.feature_service)
        return report


class SkewReportSchedule:
    """Runs the skew report of each service with a `logging.report_schedule` when due."""

    def __init__(self, ctx: ServerContext) -> None:
        """Binds the schedule to the server's registry; nothing runs until `run`."""
        self.ctx = ctx
        self.last_run: dict[str, float] = {}

    def due(self, registry: registry_pb2.Registry, now: float) -> list[tuple[str, float]]:
        """The (service, period in seconds) whose report is due at `now` (epoch seconds)."""
        out = []
        for service in registry.feature_services:
            if not service.HasField("logging"):
                continue
            period = service.logging.report_schedule.ToTimedelta().total_seconds()
            if period <= 0:
                continue
            last = self.last_run.setdefault(service.name, now)
            if now - last >= period:
                out.append((service.name, period))
        return out

    def run_due(self, now: float) -> list[_pb.GetSkewReportResponse]:
        """Runs (blocking) every due report over its last period and publishes it."""
        if not self.ctx.registry.loaded:
            return []
        registry = self.ctx.registry.current
        reports = []
        for name, period in self.due(registry, now):
            self.last_run[name] = now
            end = int(now * 1_000_000)
            try:
                report = skew_report(
                    self.ctx.config,
                    registry,
                    name,
                    start_us=end - int(period * 1_000_000),
                    end_us=end,
                )
            except Exception:
                _log.exception("the scheduled skew report of %s failed", name)
                continue
            publish_report(report)
            _log.info(
                "skew report %s: %d rows, mismatch rate %.4f",
                name,
                report.logged_rows,
                report.mismatch_rate,
            )
            reports.append(report)
        return reports

    async def run(self, interval: float = 10.0) -> None:
        """Checks every `interval` seconds for due reports, forever; cancel to stop."""
        while True:
            await asyncio.sleep(interval)
            try:
                await asyncio.to_thread(self.run_due, time.time())
            except Exception:
                _log.exception("skew report schedule failed")
