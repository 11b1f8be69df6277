"""`skewless skew`: the skew report of a feature service, as a table or JSON.

The same report `MonitoringService.GetSkewReport` returns (`skewless.offline.skew`),
computed here from the repository's files. `--fail-above R` exits with 1 when the
mismatch rate (the share of logged (row, feature) pairs neither MATCH nor
EXPECTED_EMPTY) is above R, for CI jobs and cron.
"""

from __future__ import annotations

import sys
from typing import Any

from google.protobuf import json_format

from skewless.cli.exit_codes import EXIT_FAILED, EXIT_OK
from skewless.cli.materialize import parse_time
from skewless.core.config import load_repo_config
from skewless.offline.skew import CATEGORY_NAMES, human_duration, skew_report, summary_rows
from skewless.registry.registry_store import RegistryStore
from skewless.v1 import monitoring_service_pb2

__all__ = ["add_commands", "format_report"]


def _micros(text: str | None) -> int | None:
    if text is None:
        return None
    value = parse_time(text)
    return int(value.timestamp()) * 1_000_000 + value.microsecond


def _table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        cells = [
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _time(ts: Any) -> str:
    return ts.ToDatetime().isoformat(timespec="seconds") + "Z" if ts.seconds or ts.nanos else "-"


def _shown(value: Any) -> str:
    kind = value.WhichOneof("kind")
    if kind is None or kind == "null_value":
        return "null"
    item = getattr(value, kind)
    if kind == "timestamp_value":
        return _time(item)
    if kind.endswith("_list_value"):
        return repr(list(item.values))[:60]
    return repr(item)[:60]


def format_report(report: monitoring_service_pb2.GetSkewReportResponse) -> str:
    """The report as text: a summary, a table per feature, freshness, then examples."""
    lines = [
        f"skew report of {report.feature_service}: {report.logged_rows:,} logged rows "
        f"({report.logged_requests:,} calls), {_time(report.start_time)} .. "
        f"{_time(report.end_time)}",
        f"mismatch rate {report.mismatch_rate:.4%} "
        + (
            f"(floats within {report.float_tolerance:g})"
            if report.float_tolerance
            else "(values compared bit for bit)"
        ),
        "",
        _table(list(summary_rows(report))),
    ]
    if report.views:
        lines += ["", "freshness (served vs offline event time, rows with both):"]
        for view in report.views:
            lag = view.lag
            lines.append(
                f"  {view.feature_view}: {view.stale_rows:,}/{view.rows:,} stale"
                + (
                    f", lag p50 {human_duration(lag.p50.ToMicroseconds())} "
                    f"p90 {human_duration(lag.p90.ToMicroseconds())} "
                    f"p99 {human_duration(lag.p99.ToMicroseconds())}"
                    if lag.count
                    else ""
                )
            )
    examples = [(f, e) for f in report.features for e in f.examples]
    if examples:
        lines += ["", "examples:"]
        for f, e in examples:
            keys = ", ".join(f"{k}={_shown(v)}" for k, v in sorted(e.entity_key.items()))
            lines.append(
                f"  {CATEGORY_NAMES[e.category]:<15} {f.feature_view}:{f.feature} [{keys}] "
                f"at {_time(e.request_time)} (request {e.request_id}): served "
                f"{_shown(e.served_value)} @ {_time(e.served_event_time)}, offline "
                f"{_shown(e.offline_value)} @ {_time(e.offline_event_time)}"
            )
    return "\n".join(lines)


def _skew_command(args: Any) -> int:
    config = load_repo_config(args.repo)
    registry = RegistryStore(config.storage).require()
    report = skew_report(
        config,
        registry,
        args.service,
        start_us=_micros(args.since),
        end_us=_micros(args.until),
        float_tolerance=args.tolerance,
        max_examples=args.examples,
    )
    if args.json:
        print(json_format.MessageToJson(report, always_print_fields_with_no_presence=True))
    else:
        print(format_report(report))
    if args.fail_above is not None and report.mismatch_rate > args.fail_above:
        print(
            f"mismatch rate {report.mismatch_rate:.6f} is above {args.fail_above}",
            file=sys.stderr,
        )
        return EXIT_FAILED
    return EXIT_OK


def add_commands(commands: Any) -> None:
    """Adds `skew` to the parser's subcommands."""
    p = commands.add_parser(
        "skew", help="compare what a feature service served with what training would see"
    )
    p.add_argument("--service", required=True, help="the feature service whose log to check")
    p.add_argument("--repo", default=".", help="feature repository folder (default: .)")
    p.add_argument("--since", default=None, help="only calls served at or after (ISO 8601)")
    p.add_argument("--until", default=None, help="only calls served before (ISO 8601, or now)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument(
        "--fail-above",
        type=float,
        default=None,
        metavar="R",
        help="exit with 1 when the mismatch rate is above R (e.g. 0.001)",
    )
    p.add_argument(
        "--tolerance", type=float, default=0.0, help="float difference that still matches"
    )
    p.add_argument("--examples", type=int, default=0, help="examples per feature (default 5)")
    p.set_defaults(func=_skew_command)
