"""The web console in a real headless Chromium, against the real server and redis-server.

The example repository (`examples/rides`, data generated up to now) is applied and
served in-process; the console talks to it over gRPC like any client, and Playwright
drives Debian's Chromium (`make setup` installs it; never a browser download). Each test
writes screenshots of the pages it visits to `$SKEWLESS_SCREENSHOTS` (a temporary folder
when unset); `docs/images/` holds a few of them.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from skewless.cli import main
from skewless.client import Client
from skewless.console import ConsoleServer, ConsoleSettings
from skewless.core.config import RepoConfig, load_repo_config
from skewless.online.embedded_redis import EmbeddedRedis, free_port
from skewless.registry.apply import apply_repo
from skewless.v1 import materialization_service_pb2 as mpb
from tests.helpers.processes import stop_process
from tests.integration.served import ServerThread, serve

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "rides"
TERMINAL = {mpb.JOB_STATE_SUCCEEDED, mpb.JOB_STATE_FAILED}

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="Debian's chromium is not installed (make setup installs it)"
)


# --- the served example, the console, the browser ------------------------------------------


def _wait_for_job(client: Client, job_id: str, timeout: float = 60.0) -> mpb.MaterializationJob:
    deadline = time.monotonic() + timeout
    while True:
        job = client.get_materialization_job(job_id)
        if job.state in TERMINAL:
            return job
        assert time.monotonic() < deadline, f"job {job_id} still {job.state}"
        time.sleep(0.05)


def _rides_repo(root: Path, redis_url: str) -> Path:
    repo = root / "rides"
    shutil.copytree(EXAMPLE, repo, ignore=shutil.ignore_patterns("data", ".skewless"))
    subprocess.run(
        [sys.executable, "generate_data.py", "--anchor", "now"],
        cwd=repo,
        check=True,
        capture_output=True,
        timeout=120,
    )
    (repo / "skewless.yaml").write_text(
        f"project: rides\ndata_dir: .skewless\nonline_store: {{redis_url: '{redis_url}'}}\n"
    )
    apply_repo(repo)
    return repo


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory, redis_server: EmbeddedRedis) -> Path:
    return _rides_repo(tmp_path_factory.mktemp("console"), redis_server.url)


@pytest.fixture(scope="module")
def server(repo: Path) -> Iterator[ServerThread]:
    config: RepoConfig = dataclasses.replace(load_repo_config(repo), server_port=0)
    thread = ServerThread(config, run_schedules=False).start()
    with Client(f"127.0.0.1:{thread.port}") as client:  # both views online, as `make run` does
        job = client.start_materialization(incremental=True, end_time=dt.datetime.now(dt.UTC))
        assert _wait_for_job(client, job.job_id).state == mpb.JOB_STATE_SUCCEEDED
    yield thread
    thread.stop()


@pytest.fixture(scope="module")
def target(server: ServerThread) -> str:
    return f"127.0.0.1:{server.port}"


@pytest.fixture(scope="module")
def client(target: str) -> Iterator[Client]:
    with Client(target) as c:
        yield c


@pytest.fixture(scope="module")
def console(target: str) -> Iterator[ConsoleServer]:
    running = ConsoleServer(ConsoleSettings(target=target), port=0).start()
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
def page(browser: Any, console: ConsoleServer) -> Iterator[Any]:
    context = browser.new_context(base_url=console.url, viewport={"width": 1280, "height": 860})
    tab = context.new_page()
    tab.set_default_timeout(15_000)
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    yield tab
    context.close()
    assert errors == [], f"JavaScript errors: {errors}"


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = os.environ.get("SKEWLESS_SCREENSHOTS")
    path = Path(folder) if folder else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


def shoot(page: Any, shots: Path, name: str) -> None:
    page.screenshot(path=str(shots / f"{name}.png"), full_page=True)
    assert (shots / f"{name}.png").stat().st_size > 0


def unlabelled_controls(page: Any) -> list[str]:
    """Form controls a screen reader could not name."""
    return page.evaluate(
        """() => [...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
             .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label'))
             .map(el => el.outerHTML)"""
    )


def get(url: str, **headers: str) -> tuple[int, str]:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:  # its response holds the connection's socket
            return exc.code, exc.read().decode()


# --- browsing and search ---------------------------------------------------------------------


def test_overview_then_search_then_a_view_and_its_lineage(
    page: Any, client: Client, shots: Path
) -> None:
    from playwright.sync_api import expect

    page.goto("/")
    info = client.get_registry_info()
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Project {info.project}")
    expect(page.locator('[data-field="registry-version"]')).to_have_text(str(info.version))
    expect(page.locator('[data-field="health"]')).to_have_text("SERVING")
    counts = {
        "entities": len(client.list_entities()),
        "sources": len(client.list_data_sources()),
        "views": len(client.list_feature_views()),
        "services": len(client.list_feature_services()),
    }
    for kind, count in counts.items():
        expect(page.locator(f'[data-count="{kind}"]')).to_have_text(str(count))
    shoot(page, shots, "overview")

    # Keyboard first: the skip link is the first stop and leads to the content.
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("main")).to_be_focused()

    page.get_by_label("Search features").first.fill("trips")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/search\?q=trips"))
    expected = client.search_features("trips")
    assert expected, "the example has features about trips"
    rows = page.locator("table.results tbody tr")
    expect(rows).to_have_count(len(expected))
    assert rows.locator("th code").all_inner_texts() == [m.reference for m in expected]
    owners = rows.locator("td:nth-child(6)").all_inner_texts()
    assert owners == [m.owner or "none" for m in expected]
    assert unlabelled_controls(page) == []
    shoot(page, shots, "search")

    page.get_by_role("link", name="driver_stats:avg_daily_trips").click()
    page.wait_for_url(re.compile(r"/views/driver_stats"))
    view = client.get_feature_view("driver_stats")
    expect(page.get_by_role("heading", level=1)).to_have_text("driver_stats")
    schema = page.locator("table.schema tbody tr")
    assert schema.locator("th").all_inner_texts() == [f.name for f in view.features]
    types = schema.locator("td:nth-child(2)").all_inner_texts()
    assert types == [f"{'FLOAT32' if f.value_type == 3 else 'INT64'}" for f in view.features]
    expect(page.locator('[data-field="ttl"]')).to_have_text("2d")
    expect(page.locator('[data-field="schedule"]')).to_have_text("every 1h")
    expect(page.get_by_text(view.owner).first).to_be_visible()

    # Lineage: source -> view -> service, each a link; the view itself is highlighted.
    lineage = page.locator("figure.lineage svg")
    expect(lineage.locator("a.node.source")).to_have_text([view.source])
    expect(lineage.locator("a.node.view.focus")).to_have_text(["driver_stats"])
    services = [
        s.name
        for s in client.list_feature_services()
        if "driver_stats" in {p.feature_view for p in s.projections}
    ]
    expect(lineage.locator("a.node.service")).to_have_text(services)
    expect(lineage.locator("path.edge")).to_have_count(1 + len(services))
    shoot(page, shots, "feature-view")

    lineage.locator("a.node.service", has_text="driver_ranking").focus()  # by keyboard
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/services/driver_ranking"))
    expect(page.get_by_role("heading", level=1)).to_have_text("driver_ranking")
    service_views = page.locator("figure.lineage a.node.view")
    expect(service_views).to_have_text(["driver_stats", "customer_profile"])
    shoot(page, shots, "feature-service")

    page.locator("figure.lineage a.node.source", has_text="customer_profile_source").click()
    page.wait_for_url(re.compile(r"/sources/customer_profile_source"))
    expect(page.get_by_role("heading", level=1)).to_have_text("customer_profile_source")


# --- online lookup ---------------------------------------------------------------------------


def test_online_lookup_shows_present_and_not_found_rows(
    page: Any, client: Client, shots: Path
) -> None:
    from playwright.sync_api import expect

    page.goto("/services/driver_ranking")
    page.get_by_role("link", name="Look up online values").click()
    expect(page.get_by_label("Feature service")).to_have_value("driver_ranking")
    entity_rows = page.get_by_label(re.compile("Entity rows"))
    expect(entity_rows).to_have_value("driver_id,customer_id\n")  # the service's join keys
    entity_rows.fill("driver_id,customer_id\n1001,2001\n9999,8888")
    page.get_by_role("button", name="Look up").click()
    page.wait_for_url(re.compile(r"/lookup\?.*rows="))

    served = client.get_online_features(
        {"driver_id": [1001, 9999], "customer_id": [2001, 8888]},
        feature_service="driver_ranking",
    )
    results = page.locator("table.lookup-results tbody tr")
    expect(results).to_have_count(2 * len(served.features))
    for i in range(2):
        for j, feature in enumerate(served.features):
            row = results.nth(i * len(served.features) + j)
            expect(row.locator("th")).to_have_text(feature.name)
            expect(row).to_have_attribute("data-status", feature.statuses[i])
            value = feature.values[i]
            shown = row.locator("td.value").inner_text()
            if isinstance(value, bool):
                assert shown == str(value).lower()
            elif isinstance(value, int | float):
                assert float(shown) == pytest.approx(value, rel=1e-7)
    first = {feature.statuses[0] for feature in served.features}
    assert "PRESENT" in first, first  # data up to now: the known driver's values are live
    assert {feature.statuses[1] for feature in served.features} == {"NOT_FOUND"}
    expect(page.locator('tr[data-status="PRESENT"]').first).to_be_visible()
    expect(page.locator('tr[data-status="NOT_FOUND"]')).to_have_count(len(served.features))
    assert unlabelled_controls(page) == []
    shoot(page, shots, "online-lookup")

    # A key that does not fit its declared type is refused before any call.
    page.get_by_label(re.compile("Entity rows")).fill("driver_id,customer_id\nabc,2001")
    page.get_by_role("button", name="Look up").click()
    expect(page.get_by_role("alert")).to_contain_text("'abc' is not an integer")

    # An unknown feature service: the server's status and message.
    response = page.goto("/lookup?feature_service=no_such_service&rows=driver_id%0A1001")
    assert response is not None and response.status == 404
    expect(page.get_by_role("alert")).to_contain_text("NOT_FOUND")
    expect(page.get_by_role("alert")).to_contain_text("no_such_service")


# --- materialization -------------------------------------------------------------------------


def test_start_a_materialization_and_watch_it_succeed(
    page: Any, client: Client, shots: Path
) -> None:
    from playwright.sync_api import expect

    end = dt.datetime.now(dt.UTC).replace(microsecond=0)
    start = end - dt.timedelta(days=11)
    page.goto("/jobs")
    page.get_by_label("Feature views").select_option(["customer_profile", "driver_stats"])
    page.get_by_label("Window: from the start to the end").check()
    page.get_by_label("Start (UTC, inclusive)").fill(start.strftime("%Y-%m-%dT%H:%M:%S"))
    page.get_by_label("End (UTC, exclusive; empty: now)").fill(end.strftime("%Y-%m-%dT%H:%M:%S"))
    assert unlabelled_controls(page) == []
    with page.expect_navigation() as navigation:
        page.get_by_role("button", name="Start materialization").click()
    job_id = page.url.rsplit("/", 1)[1]
    first_render = navigation.value.text()
    page.evaluate("window.__same_page = true")

    # The page follows the job without a reload until it is done.
    state = page.locator('[data-field="state"]')
    expect(state).to_have_text("SUCCEEDED", timeout=60_000)
    assert page.evaluate("window.__same_page") is True
    job = client.get_materialization_job(job_id)
    assert job.state == mpb.JOB_STATE_SUCCEEDED, job.error
    assert list(job.feature_views) == ["customer_profile", "driver_stats"]
    assert 'data-live="true"' in first_render  # it was still running when the page loaded
    expect(page.locator('[data-field="rows_written"]')).to_have_text(str(job.rows_written))
    expect(page.locator('[data-field="percent"]')).to_have_text("100%")
    assert job.rows_written > 0
    shoot(page, shots, "materialization-job")

    # Newest first in the list; the view's freshness page shows its window end.
    page.goto("/jobs")
    expect(page.locator("table.jobs tbody tr").first).to_have_attribute("data-job-id", job_id)
    shoot(page, shots, "jobs")
    page.goto("/views/driver_stats/freshness")
    newest_end = max(
        j.window_end_time.ToDatetime()
        for j in client.list_materialization_jobs(feature_view="driver_stats")
        if j.state == mpb.JOB_STATE_SUCCEEDED
    )
    expect(page.locator('[data-field="window-end"]')).to_contain_text(
        newest_end.strftime("%Y-%m-%d %H:%M:%S")
    )
    stores = client.get_feature_view_freshness("driver_stats")
    for field, stamp in (
        ("watermark", stores.watermark_time),
        ("newest-event-time", stores.newest_event_time),
    ):
        assert stamp.seconds > 0, field  # materialized: both are known
        expect(page.locator(f'[data-field="{field}"]')).to_contain_text(
            stamp.ToDatetime().strftime("%Y-%m-%d %H:%M:%S")
        )
    expect(page.locator('[data-field="history-rows"]')).to_have_text(str(stores.history_rows))
    shoot(page, shots, "freshness")

    # A refused start shows the server's status and message on the form.
    page.goto("/jobs")
    page.get_by_label("Window: from the start to the end").check()
    page.get_by_label("Start (UTC, inclusive)").fill(end.strftime("%Y-%m-%dT%H:%M:%S"))
    page.get_by_label("End (UTC, exclusive; empty: now)").fill(start.strftime("%Y-%m-%dT%H:%M:%S"))
    page.get_by_role("button", name="Start materialization").click()
    expect(page.get_by_role("alert")).to_contain_text("INVALID_ARGUMENT")
    expect(page.get_by_role("alert")).to_contain_text("is before start_time")


# --- without JavaScript, and when things fail ------------------------------------------------


def test_reading_pages_work_without_javascript(
    browser: Any, console: ConsoleServer, client: Client
) -> None:
    context = browser.new_context(base_url=console.url, java_script_enabled=False)
    page = context.new_page()
    try:
        page.goto("/search?q=customer+balance")
        expected = [m.reference for m in client.search_features("customer balance")]
        assert "customer_profile:current_balance" in expected
        assert page.locator("table.results tbody tr th").all_inner_texts() == expected
        page.goto("/views/customer_profile")
        assert page.locator("pre.sql").inner_text().strip().startswith("SELECT customer_id")
        assert page.locator("figure.lineage a.node").count() == 3
        page.goto("/lookup?feature_service=driver_ranking&rows=driver_id,customer_id%0A9999,8888")
        statuses = page.locator("table.lookup-results tbody tr").evaluate_all(
            "rows => rows.map(r => r.dataset.status)"
        )
        assert statuses and set(statuses) == {"NOT_FOUND"}
    finally:
        context.close()


def test_api_errors_show_status_and_message_never_a_traceback(
    page: Any, console: ConsoleServer
) -> None:
    from playwright.sync_api import expect

    response = page.goto("/views/no_such_view")
    assert response is not None and response.status == 404
    alert = page.get_by_role("alert")
    expect(alert.locator(".code")).to_have_text("NOT_FOUND")
    expect(alert.locator(".message")).to_contain_text("no_such_view")

    # A console whose server is down: UNAVAILABLE with gRPC's message, as a page.
    dead = ConsoleServer(ConsoleSettings(target=f"127.0.0.1:{free_port()}", timeout=2), port=0)
    dead.start()
    try:
        status, body = get(dead.url + "/")
        assert status == 503
        assert "UNAVAILABLE" in body
        status, body = get(dead.url + "/views/driver_stats")
        assert status == 503 and "UNAVAILABLE" in body
        status, body = get(dead.url + "/api/jobs/x")
        assert status == 503 and '"code":"UNAVAILABLE"' in body
    finally:
        dead.stop()
    for text in (body, page.content()):
        assert "Traceback" not in text and ".py" not in text

    # Another site cannot post the start form through the user's browser.
    request = urllib.request.Request(
        console.url + "/jobs",
        data=b"mode=incremental",
        headers={"Origin": "http://evil.example"},
        method="POST",
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    refused.value.close()  # its response holds the connection's socket
    assert refused.value.code == 403


# --- the command line ------------------------------------------------------------------------


_CONSOLE_URL = re.compile(r"skewless console on (http://127\.0\.0\.1:\d+)")


def test_serve_with_ui_port_and_skewless_ui(
    repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = tmp_path / "rides"
    shutil.copytree(repo, copy)  # its own data dir: no lock shared with the tests above
    with serve(copy, "--ui-port", "0") as served:
        deadline = time.monotonic() + 20
        while not (found := _CONSOLE_URL.search(served.output())):
            assert time.monotonic() < deadline, served.output()
            time.sleep(0.05)
        status, body = get(found.group(1) + "/")
        assert status == 200 and "Project <code>rides</code>" in body

        ui = subprocess.Popen(
            [sys.executable, "-m", "skewless.cli", "ui", "--target", served.target, "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            assert ui.stdout is not None
            line = ui.stdout.readline()
            found = _CONSOLE_URL.search(line)
            assert found, line
            status, body = get(found.group(1) + "/search?q=conv_rate")
            assert status == 200 and "driver_stats:conv_rate" in body
        finally:
            stop_process(ui)

    # A port in use: one error line and exit code 2, before anything starts.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["ui", "--port", str(port)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: cannot serve the console on 127.0.0.1:{port} (Address already in use): "
        "choose another port"
    ]
