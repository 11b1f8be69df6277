"""The console against a server that checks identities, and its skew report page.

A real `redis-server` and the real server with `auth.mode: token` (hashed static
tokens, the policies of `auth_repo`, plus an auditor who may read but not
materialize), the push-fed repository with feature logging on for the service `live`.
Playwright drives Debian's Chromium: without a token every page is the sign-in form; a
wrong token is refused with the server's message; a good one lets the user in, held
in an HttpOnly, Secure, SameSite=Strict session cookie that is not the token; the
auditor's start of a job shows PERMISSION_DENIED; sign-out ends it. The skew report
page shows a mismatch induced by overwriting a served value in Redis by hand, and a
stale row induced by a history row that arrives after the call.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pyarrow as pa
import pytest
import redis

from skewless.client import Client, SkewlessClientError
from skewless.console import ConsoleServer, ConsoleSettings
from skewless.core.config import load_repo_config
from skewless.online.embedded_redis import EmbeddedRedis
from skewless.online.layout import redis_key
from skewless.registry import FeatureLogging, Policy
from skewless.v1 import online_service_pb2, types_pb2
from tests.helpers.repos import live_definitions, save_registry
from tests.integration.auth_repo import POLICIES, TOKENS, token_file
from tests.integration.served import ServerThread
from tests.integration.test_console import CHROMIUM, CHROMIUM_ARGS, shoot, unlabelled_controls

PROJECT = "console_authz"
UTC_US = pa.timestamp("us", tz="UTC")
EVENT_TIME = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(minutes=5)
LATE = dt.timedelta(minutes=2)
AUDITOR = Policy(
    name="auditors",
    subjects=("auditor",),
    actions=("read_registry", "read_historical"),
    resources=("project",),
)
CONSOLE_TOKENS = {**TOKENS, "auditor-token": ("auditor", ())}

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="Debian's chromium is not installed (make setup installs it)"
)


def _rows(ids: list[int], when: dt.datetime = EVENT_TIME) -> pa.Table:
    n = len(ids)
    return pa.table(
        {
            "driver_id": pa.array(ids, pa.int64()),
            "ts": pa.array([when] * n, UTC_US),
            "created": pa.nulls(n, UTC_US),
            "conv_rate": pa.array([0.25 * i for i in ids], pa.float64()),
            "trips": pa.array([10 * i for i in ids], pa.int64()),
            "note": pa.array([f"d{i}" for i in ids], pa.string()),
        }
    )


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, redis_server: EmbeddedRedis
) -> Iterator[ServerThread]:
    root = tmp_path_factory.mktemp("console-auth")
    token_file(root / "tokens.yaml", CONSOLE_TOKENS)
    (root / "skewless.yaml").write_text(
        f"project: {PROJECT}\ndata_dir: .skewless\n"
        f"online_store: {{redis_url: '{redis_server.url}'}}\n"
        "server:\n  feature_log: {flush_interval: 0.2}\n"
        "auth:\n  mode: token\n  token_file: tokens.yaml\n"
    )
    config = dataclasses.replace(load_repo_config(root), server_port=0)
    definitions = live_definitions()
    logged = dataclasses.replace(
        definitions.feature_services[0], logging=FeatureLogging(sample_rate=1.0)
    )
    save_registry(
        config,
        dataclasses.replace(definitions, feature_services=(logged,), policies=(*POLICIES, AUDITOR)),
    )
    thread = ServerThread(config, run_schedules=False).start()
    yield thread
    thread.stop()


@pytest.fixture(scope="module")
def admin(server: ServerThread) -> Iterator[Client]:
    with Client(f"127.0.0.1:{server.port}", token="admin-token", timeout=10) as client:
        yield client


@pytest.fixture(scope="module")
def console(server: ServerThread) -> Iterator[ConsoleServer]:
    running = ConsoleServer(ConsoleSettings(target=f"127.0.0.1:{server.port}"), port=0).start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def context(browser: Any, console: ConsoleServer) -> Iterator[Any]:
    context = browser.new_context(base_url=console.url, viewport={"width": 1280, "height": 860})
    context.set_default_timeout(15_000)
    yield context
    context.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import os

    folder = os.environ.get("SKEWLESS_SCREENSHOTS")
    path = Path(folder) if folder else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


def sign_in(page: Any, token: str) -> Any:
    page.get_by_label("Token", exact=True).fill(token)
    with page.expect_navigation() as navigation:
        page.get_by_role("button", name="Sign in").click()
    return navigation.value


def test_refused_without_a_token_let_in_with_one_denied_to_materialize(
    context: Any, console: ConsoleServer, shots: Path
) -> None:
    from playwright.sync_api import expect

    page = context.new_page()
    response = page.goto("/views/driver_live")
    assert response is not None and response.status == 401
    expect(page.get_by_role("heading", level=1)).to_have_text("Sign in")
    expect(page.get_by_role("alert")).to_contain_text("UNAUTHENTICATED")
    assert unlabelled_controls(page) == []
    shoot(page, shots, "sign-in")
    for path in ("/", "/search?q=trips", "/lookup?feature_service=live&rows=driver_id%0A1"):
        refused = context.request.get(path)  # pages whose sections settle their calls too
        assert refused.status == 401 and 'action="/signin"' in refused.text(), path

    # A wrong token: refused with the server's message, no session.
    assert sign_in(page, "not-a-token").status == 401
    expect(page.get_by_role("alert")).to_contain_text("UNAUTHENTICATED")
    assert context.cookies() == []

    # A good one: back to the page asked for, as that user.
    assert sign_in(page, "auditor-token").status == 200
    assert page.url.endswith("/views/driver_live")
    expect(page.get_by_role("heading", level=1)).to_have_text("driver_live")
    (cookie,) = context.cookies()
    assert cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Strict"
    assert "auditor-token" not in cookie["value"] and "auditor-token" not in page.url
    assert "auditor-token" not in page.content()
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()

    # The auditor may read jobs but not start one: the server's refusal on the form.
    response = page.goto("/jobs")
    assert response is not None and response.headers["cache-control"] == "no-store"
    page.get_by_role("button", name="Start materialization").click()
    alert = page.get_by_role("alert")
    expect(alert.locator(".code")).to_have_text("PERMISSION_DENIED")
    expect(alert).to_contain_text("materialize")
    shoot(page, shots, "permission-denied")

    # Another user's token, another identity: nobody may not even read the registry.
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(re.compile(r"/signin"))
    assert context.cookies() == []
    page.goto("/signin?next=/views")
    assert sign_in(page, "nobody-token").status == 403
    expect(page.get_by_role("alert").locator(".code")).to_have_text("PERMISSION_DENIED")

    # After sign-out the old session id is worth nothing, even replayed by hand.
    (session,) = context.cookies()
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(re.compile(r"/signin"))
    context.add_cookies([session])
    assert page.goto("/views").status == 401  # type: ignore[union-attr]


def test_skew_report_and_freshness_show_an_induced_mismatch(
    context: Any, admin: Client, redis_server: EmbeddedRedis, shots: Path
) -> None:
    from playwright.sync_api import expect

    admin.push_features(_rows([1, 2, 3]), push_source="driver_push")
    admin.get_online_features({"driver_id": [1, 2, 3, 99]}, feature_service="live")
    # Driver 2's served value overwritten by hand in Redis: same event time, other value.
    r = redis.Redis.from_url(redis_server.url)
    r.hset(
        redis_key(PROJECT, "driver_live", [2]),
        b"conv_rate",
        types_pb2.Value(double_value=-1.0).SerializeToString(),
    )
    r.close()
    admin.get_online_features({"driver_id": [2]}, feature_service="live")
    # Driver 3's history gets a later row after the calls (history arriving late): what
    # was served at request time was older than the offline row then, by LATE.
    admin.push_features(
        _rows([3], EVENT_TIME + LATE),
        push_source="driver_push",
        destination=online_service_pb2.PUSH_DESTINATION_OFFLINE,
    )
    deadline = time.monotonic() + 20
    while admin.get_skew_report("live").logged_requests < 2:  # the log flushes every 0.2 s
        assert time.monotonic() < deadline, "the feature log was not written"
        time.sleep(0.1)
    report = admin.get_skew_report("live")

    page = context.new_page()
    page.goto("/services/live")
    sign_in(page, "admin-token")
    page.get_by_role("link", name="Skew report").click()
    page.wait_for_url(re.compile(r"/services/live/skew"))
    expect(page.get_by_role("heading", level=1)).to_have_text("live")
    expect(page.locator('[data-field="logged-rows"]')).to_have_text(str(report.logged_rows))
    conv = page.locator('tr[data-feature="driver_live:conv_rate"]')
    expect(conv.locator('[data-category="VALUE_MISMATCH"]')).to_have_text("1")
    expect(conv.locator('[data-category="SERVED_STALE"]')).to_have_text("1")
    expect(conv.locator('[data-category="MATCH"]')).to_have_text("2")
    expect(conv.locator("svg.skew-bar rect.cat-VALUE_MISMATCH")).to_have_count(1)
    trips = page.locator('tr[data-feature="driver_live:trips"]')
    expect(trips.locator('[data-category="VALUE_MISMATCH"]')).to_have_text("0")
    expect(trips.locator('[data-category="MATCH"]')).to_have_text("3")
    stale = page.locator('table.lag tr[data-feature="driver_live:conv_rate"]')
    expect(stale.locator('[data-field="lag-max"]')).to_have_text("2min")
    (example,) = page.locator('table.examples tr[data-category="VALUE_MISMATCH"]').all()
    expect(example.locator("td.served")).to_have_text("-1.0")
    expect(example.locator("td.offline")).to_have_text("0.5")
    expect(example).to_contain_text("driver_id=2")
    fresh = page.locator('#view-freshness tr[data-view="driver_live"]')
    expect(fresh.locator('[data-field="stale-rows"]')).to_have_text("1")
    assert unlabelled_controls(page) == []
    shoot(page, shots, "skew-report")

    # Reading needs no JavaScript: the same page, the same counts, without it.
    status, body = _fetch_with(context, page.url)
    assert status == 200 and 'data-category="VALUE_MISMATCH"' in body

    # Freshness of the pushed view: the newest event time in history and the lag.
    stores = admin.get_feature_view_freshness("driver_live")
    assert stores.newest_event_time.ToDatetime(dt.UTC) == EVENT_TIME + LATE
    assert not stores.HasField("watermark_time") and stores.history_rows == 4
    page.goto("/views/driver_live/freshness")
    expect(page.locator('[data-field="newest-event-time"]')).to_contain_text(
        (EVENT_TIME + LATE).strftime("%Y-%m-%d %H:%M:%S")
    )
    expect(page.locator('[data-field="watermark"]')).to_contain_text("never materialized")
    lag = page.locator('tr[data-service="live"]')
    expect(lag.locator('[data-field="stale-rows"]')).to_have_text("1")
    expect(lag.locator('[data-field="lag-max"]')).to_have_text("2min")
    shoot(page, shots, "view-freshness")

    for name, code in (("", grpc.StatusCode.INVALID_ARGUMENT), ("nope", grpc.StatusCode.NOT_FOUND)):
        with pytest.raises(SkewlessClientError) as refused:
            admin.get_feature_view_freshness(name)
        assert refused.value.code == code


def _fetch_with(context: Any, url: str) -> tuple[int, str]:
    """GETs `url` with the context's cookies but no browser (so no JavaScript)."""
    response = context.request.get(url)
    return response.status, response.text()
