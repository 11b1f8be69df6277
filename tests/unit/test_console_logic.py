"""The console's pure logic: entity rows, lineage layout, display, forms, freshness."""

from __future__ import annotations

import datetime as dt

import pytest
from google.protobuf import duration_pb2, timestamp_pb2

from skewless.console.display import age, duration, feature_value, type_name, when
from skewless.console.entity_rows import EntityRowsError, parse_entity_rows
from skewless.console.freshness_page import freshness_of
from skewless.console.job_pages import JobForm
from skewless.console.lineage import layout, service_lineage, source_lineage, view_lineage
from skewless.v1 import materialization_service_pb2 as mpb
from skewless.v1 import registry_pb2, types_pb2

VT = types_pb2.ValueType
NOW = dt.datetime(2026, 12, 1, 12, tzinfo=dt.UTC)


def ts(moment: dt.datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp


# --- entity rows ------------------------------------------------------------------------------


def test_entity_rows_are_typed_by_their_join_keys() -> None:
    rows = parse_entity_rows(
        'driver_id, city, blob, extra\n1001, "Paris, FR", 0x0aff, 7\n\n-5,Lyon,raw,x\n',
        {
            "driver_id": VT.VALUE_TYPE_INT64,
            "city": VT.VALUE_TYPE_STRING,
            "blob": VT.VALUE_TYPE_BYTES,
        },
    )
    assert rows.keys == ["driver_id", "city", "blob", "extra"]
    assert rows.rows == [["1001", "Paris, FR", "0x0aff", "7"], ["-5", "Lyon", "raw", "x"]]
    assert [v.int64_value for v in rows.columns["driver_id"]] == [1001, -5]
    assert [v.string_value for v in rows.columns["city"]] == ["Paris, FR", "Lyon"]
    assert [v.bytes_value for v in rows.columns["blob"]] == [b"\x0a\xff", b"raw"]
    # An undeclared key: an integer when it looks like one, else a string (the server judges).
    assert [v.WhichOneof("kind") for v in rows.columns["extra"]] == ["int64_value", "string_value"]


def test_int32_keys_are_sent_as_int32() -> None:
    rows = parse_entity_rows("k\n3", {"k": VT.VALUE_TYPE_INT32})
    assert rows.columns["k"][0] == types_pb2.Value(int32_value=3)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "enter a header line"),
        ("driver_id\n", "at least one entity row"),
        ("driver_id,driver_id\n1,2", "names a join key twice"),
        ("driver_id,\n1,2", "empty join key name"),
        ("driver_id,customer_id\n1", "row 1 has 1 value(s), the header 2 key(s)"),
        ("driver_id\n1\nabc", "row 2, driver_id: 'abc' is not an integer"),
        ("blob\n0xzz", "row 1, blob: '0xzz' is not hexadecimal"),
    ],
)
def test_bad_entity_rows_say_where_and_why(text: str, message: str) -> None:
    types = {"driver_id": VT.VALUE_TYPE_INT64, "blob": VT.VALUE_TYPE_BYTES}
    with pytest.raises(EntityRowsError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_entity_rows(text, types)


# --- lineage ---------------------------------------------------------------------------------


def _view(name: str, source: str) -> registry_pb2.FeatureView:
    return registry_pb2.FeatureView(name=name, source=source, entities=["driver"])


def _service(name: str, *views: str) -> registry_pb2.FeatureService:
    return registry_pb2.FeatureService(
        name=name, projections=[registry_pb2.FeatureProjection(feature_view=v) for v in views]
    )


def test_view_lineage_is_its_source_and_the_services_serving_it() -> None:
    view = _view("stats", "src")
    services = [_service("rank", "stats", "other"), _service("fraud", "other")]
    graph = view_lineage(view, services)
    assert graph.columns == {"source": ["src"], "view": ["stats"], "service": ["rank"]}
    placed = layout(graph)
    assert [(n.kind, n.name, n.focus) for n in placed.nodes] == [
        ("source", "src", False),
        ("view", "stats", True),
        ("service", "rank", False),
    ]
    assert [n.href for n in placed.nodes] == ["/sources/src", "/views/stats", "/services/rank"]
    assert [e.text for e in placed.edges] == [
        "source src → view stats",
        "view stats → service rank",
    ]
    xs = [n.x for n in placed.nodes]
    assert xs == sorted(xs) and len(set(xs)) == 3  # three columns, left to right
    assert placed.width >= placed.nodes[-1].x + placed.nodes[-1].width


def test_service_and_source_lineage() -> None:
    views = [_view("a", "s1"), _view("b", "s2"), _view("c", "s1")]
    service = service_lineage(_service("svc", "b", "a"), views)
    assert service.columns == {"source": ["s2", "s1"], "view": ["b", "a"], "service": ["svc"]}
    source = source_lineage(
        registry_pb2.DataSource(name="s1"), views, [_service("x", "c"), _service("y", "b")]
    )
    assert source.columns == {"source": ["s1"], "view": ["a", "c"], "service": ["x"]}
    assert len(source.edges) == 3


def test_a_crowded_column_is_cut_with_a_more_box_and_keeps_the_focus() -> None:
    views = [_view(f"v{i:04d}", "src") for i in range(1000)]
    graph = source_lineage(registry_pb2.DataSource(name="src"), views, [])
    placed = layout(graph, max_per_column=30)
    view_nodes = [n for n in placed.nodes if n.kind == "view"]
    more = [n for n in placed.nodes if n.kind == "more"]
    assert len(view_nodes) == 30 and placed.hidden == 970
    assert [m.label for m in more] == ["+970 more"] and more[0].href == ""
    assert len(placed.edges) == 30  # edges to hidden nodes are not drawn
    focused = view_lineage(_view("v0999", "src"), [])
    focused.columns["view"] = [v.name for v in views]
    assert any(n.focus and n.name == "v0999" for n in layout(focused, max_per_column=5).nodes)


def test_long_names_are_shortened_but_link_to_the_full_name() -> None:
    name = "a_very_long_feature_view_name_that_goes_on_and_on"
    node = next(n for n in layout(view_lineage(_view(name, "s"), [])).nodes if n.kind == "view")
    assert node.label.endswith("…") and len(node.label) == 34
    assert node.href == f"/views/{name}"


# --- display ---------------------------------------------------------------------------------


def test_display_of_types_durations_instants_and_values() -> None:
    assert type_name(VT.VALUE_TYPE_FLOAT64) == "FLOAT64"
    assert duration(duration_pb2.Duration(seconds=2 * 86400)) == "2d"
    assert duration(duration_pb2.Duration(seconds=5400)) == "1h 30min"
    assert duration(duration_pb2.Duration()) == ""
    assert duration(dt.timedelta(milliseconds=250)) == "250 ms"
    assert when(ts(dt.datetime(2026, 11, 20, 6, 15, tzinfo=dt.UTC))) == "2026-11-20 06:15:00 UTC"
    assert when(timestamp_pb2.Timestamp()) == "—"
    assert age(NOW - dt.timedelta(hours=3, minutes=5), NOW) == "3h 5min ago"
    assert age(NOW + dt.timedelta(days=2), NOW) == "in 2d"
    V = types_pb2.Value
    assert feature_value(V(double_value=0.25)) == "0.25"
    assert feature_value(V(bool_value=True)) == "true"
    assert feature_value(V()) == "null"
    assert feature_value(V(bytes_value=b"\x0a")) == "0x0a"
    assert feature_value(V(int64_list_value=types_pb2.Int64List(values=[1, 2]))) == "[1, 2]"
    assert feature_value(V(timestamp_value=ts(NOW))) == "2026-12-01 12:00:00 UTC"


# --- the start form and freshness --------------------------------------------------------------


def test_the_start_form_reads_windows_in_utc() -> None:
    form = JobForm.parse(
        b"feature_views=a&feature_views=b&mode=window&start=2026-11-20T00%3A00&end=2026-11-21T06%3A30%3A00"
    )
    assert form.feature_views == ["a", "b"]
    start, end, incremental = form.window()
    assert (start, end, incremental) == (
        dt.datetime(2026, 11, 20, tzinfo=dt.UTC),
        dt.datetime(2026, 11, 21, 6, 30, tzinfo=dt.UTC),
        False,
    )
    start, end, incremental = JobForm.parse(
        b"mode=incremental&end=2026-11-21T00:00%2B01:00"
    ).window()
    assert start is None and incremental
    assert end == dt.datetime(2026, 11, 20, 23, tzinfo=dt.UTC)
    with pytest.raises(ValueError, match="start: a window needs a start"):
        JobForm.parse(b"mode=window&end=2026-11-21T00:00").window()
    with pytest.raises(ValueError, match="end: 'tomorrow' is not a date and time"):
        JobForm.parse(b"end=tomorrow").window()


def _job(views: list[str], state: int, end: dt.datetime) -> mpb.MaterializationJob:
    return mpb.MaterializationJob(
        job_id=f"j{end:%d%H}", feature_views=views, state=state, window_end_time=ts(end)
    )


def test_freshness_takes_the_newest_succeeded_window_end() -> None:
    view = registry_pb2.FeatureView(name="stats", schedule=duration_pb2.Duration(seconds=3600))
    jobs = [  # newest first
        _job(["stats"], mpb.JOB_STATE_FAILED, NOW),
        _job(["other"], mpb.JOB_STATE_SUCCEEDED, NOW),
        _job(["stats"], mpb.JOB_STATE_SUCCEEDED, NOW - dt.timedelta(days=3)),  # a backfill
        _job(["stats", "other"], mpb.JOB_STATE_SUCCEEDED, NOW - dt.timedelta(minutes=90)),
    ]
    fresh = freshness_of(view, jobs, NOW)
    assert fresh.last_job == jobs[0]
    assert fresh.last_success == jobs[2]
    assert fresh.window_end == NOW - dt.timedelta(minutes=90)
    assert fresh.behind is False  # 1.5 periods: within two
    assert freshness_of(view, jobs, NOW + dt.timedelta(hours=1)).behind is True
    assert freshness_of(view, [], NOW).behind is True  # scheduled, never succeeded
    unscheduled = registry_pb2.FeatureView(name="stats")
    assert freshness_of(unscheduled, jobs, NOW).behind is None
