"""The console's sign-in sessions, and the skew report page's charts and form."""

from __future__ import annotations

import pytest
from google.protobuf import duration_pb2

from skewless.console.auth_pages import safe_next
from skewless.console.sessions import SessionStore
from skewless.console.skew_page import BAR_WIDTH, CATEGORIES, SkewForm, lag_bars, segments
from skewless.v1 import monitoring_service_pb2 as mpb

# --- sessions ---------------------------------------------------------------------------------


def test_a_session_holds_its_token_under_a_fresh_id_until_dropped() -> None:
    store = SessionStore()
    first, second = store.create("token-a"), store.create("token-a")
    assert first != second and "token-a" not in first
    session = store.get(first)
    assert session is not None and session.token == "token-a"
    store.drop(first)
    assert store.get(first) is None
    assert store.get(second) is not None
    assert store.get("") is None and store.get(None) is None and store.get("made-up") is None


def test_sessions_end_when_idle_too_long_or_too_old() -> None:
    idle = SessionStore(idle_seconds=-1)  # every session is past its idle time at once
    assert idle.get(idle.create("t")) is None
    old = SessionStore(max_age_seconds=-1)
    assert old.get(old.create("t")) is None
    assert len(idle) == 0 and len(old) == 0  # an ended session is forgotten


def test_the_least_recently_used_session_goes_first_when_full() -> None:
    store = SessionStore(max_sessions=2)
    a, b = store.create("a"), store.create("b")
    assert store.get(a) is not None  # a is now the most recent
    store.create("c")
    assert store.get(b) is None and store.get(a) is not None and len(store) == 2


def test_the_store_holds_no_cookie_value() -> None:
    store = SessionStore()
    session_id = store.create("t")
    assert session_id not in store._sessions  # kept under its hash


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/views/x?q=1", "/views/x?q=1"),
        ("/", "/"),
        ("", "/"),
        ("https://evil.example/", "/"),
        ("//evil.example/", "/"),
        ("/\\evil.example", "/"),
        ("/\t/evil.example", "/"),
        ("/signin", "/"),
        ("/signout", "/"),
    ],
)
def test_only_console_paths_are_followed_after_sign_in(path: str, expected: str) -> None:
    assert safe_next(path) == expected


# --- the skew report page ---------------------------------------------------------------------


def _feature(counts: dict[str, int]) -> mpb.FeatureSkew:
    total = sum(counts.values())
    feature = mpb.FeatureSkew(feature_view="v", feature="f", rows=total)
    for name in CATEGORIES:
        count = counts.get(name, 0)
        feature.categories.add(
            category=mpb.SkewCategory.Value(f"SKEW_CATEGORY_{name}"),
            count=count,
            rate=count / total if total else 0.0,
        )
    return feature


def test_categories_are_consecutive_parts_of_one_bar() -> None:
    parts = segments(_feature({"MATCH": 6, "VALUE_MISMATCH": 2, "EXPECTED_EMPTY": 2}))
    assert [p.category for p in parts] == ["MATCH", "VALUE_MISMATCH", "EXPECTED_EMPTY"]
    assert [p.count for p in parts] == [6, 2, 2]
    assert parts[0].x == 0 and parts[1].x == pytest.approx(parts[0].width)
    assert sum(p.width for p in parts) == pytest.approx(BAR_WIDTH, abs=0.05)
    assert parts[0].width == pytest.approx(BAR_WIDTH * 0.6, abs=0.05)


def test_a_rare_category_stays_visible_and_no_rows_draw_nothing() -> None:
    parts = segments(_feature({"MATCH": 999_999, "VALUE_MISMATCH": 1}))
    assert parts[1].width >= 2.9
    assert sum(p.width for p in parts) == pytest.approx(BAR_WIDTH, abs=0.05)
    assert segments(_feature({})) == []


def test_lag_bars_share_the_longest_lag_as_their_scale() -> None:
    lag = mpb.LagDistribution(
        count=3,
        p50=duration_pb2.Duration(seconds=60),
        p90=duration_pb2.Duration(seconds=120),
        p99=duration_pb2.Duration(seconds=240),
        max=duration_pb2.Duration(seconds=240),
    )
    bars = lag_bars(lag, longest=480, width=200)
    assert [b.quantile for b in bars] == ["p50", "p90", "p99", "max"]
    assert [b.width for b in bars] == [25.0, 50.0, 100.0, 100.0]
    assert [b.width for b in lag_bars(mpb.LagDistribution(), longest=0)] == [0, 0, 0, 0]


def test_the_report_form_refuses_what_the_server_would() -> None:
    start, end, tolerance, examples = SkewForm(
        since="2026-12-01T10:00", until="2026-12-02T10:00:00Z", tolerance="0.001", examples="20"
    ).parsed()
    assert start is not None and start.isoformat() == "2026-12-01T10:00:00+00:00"
    assert end is not None and end.isoformat() == "2026-12-02T10:00:00+00:00"
    assert (tolerance, examples) == (0.001, 20)
    assert SkewForm().parsed() == (None, None, 0.0, 0)
    for form, message in (
        (SkewForm(since="yesterday"), "since:"),
        (SkewForm(tolerance="-1"), "tolerance: must be 0 or more"),
        (SkewForm(tolerance="nan"), "tolerance: must be 0 or more"),
        (SkewForm(tolerance="lots"), "is not a number"),
        (SkewForm(examples="0"), "examples: from 1 to 100"),
        (SkewForm(examples="2.5"), "is not a whole number"),
    ):
        with pytest.raises(ValueError, match=message):
            form.parsed()
