"""Pure logic of the server and the jobs: pagination, status caps, schedules, times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from google.rpc import code_pb2, error_details_pb2

from skewless.cli.materialize import parse_time
from skewless.core.errors import InvalidArgumentError, NotFoundError, StoreUnavailableError
from skewless.materialization.schedule import due_boundary
from skewless.server.errors import MAX_MESSAGE, to_status
from skewless.server.pagination import MAX_PAGE_SIZE, paginate


def test_pages_cover_every_item_once_and_tokens_are_bound_to_their_request() -> None:
    items = list(range(250))
    seen, token = [], ""
    while True:
        page, token = paginate(items, 100, token, scope="q=x")
        seen += page
        if not token:
            break
    assert seen == items
    _, token = paginate(items, 10, "", scope="q=x")
    with pytest.raises(InvalidArgumentError) as info:
        paginate(items, 10, token, scope="q=y")  # another query's token
    assert info.value.reason == "INVALID_PAGE_TOKEN"
    for bad in ("%%%", "bm90IGEgdG9rZW4="):
        with pytest.raises(InvalidArgumentError):
            paginate(items, 10, bad, scope="q=x")
    with pytest.raises(InvalidArgumentError) as info:
        paginate(items, -1, "")
    assert info.value.reason == "INVALID_PAGE_SIZE"
    assert len(paginate(list(range(5000)), 10_000, "")[0]) == MAX_PAGE_SIZE


def test_statuses_cap_what_they_echo() -> None:
    name = "n" * 2**20
    status = to_status(
        NotFoundError(f"no view {name}", reason="FEATURE_VIEW_NOT_FOUND", metadata={"v": name})
    )
    assert status.code == code_pb2.NOT_FOUND
    assert len(status.message) <= MAX_MESSAGE + 40 and "1,048,584 characters" in status.message
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    assert len(info.metadata["v"]) < 200 and info.metadata["v"].endswith("(1,048,576 characters)")
    assert len(status.SerializeToString()) < 4096


def test_unavailable_carries_a_retry_delay_and_bad_input_its_field() -> None:
    retry = to_status(StoreUnavailableError("down", reason="ONLINE_STORE_UNAVAILABLE"))
    assert retry.code == code_pb2.UNAVAILABLE
    delay = error_details_pb2.RetryInfo()
    assert any(d.Unpack(delay) for d in retry.details) and delay.retry_delay.nanos > 0
    bad = to_status(InvalidArgumentError("bad", field="entities[x]", reason="WRONG_KEY_TYPE"))
    request = error_details_pb2.BadRequest()
    assert any(d.Unpack(request) for d in bad.details)
    assert request.field_violations[0].field == "entities[x]"
    internal = to_status(RuntimeError("/srv/secret/path exploded"))
    assert internal.code == code_pb2.INTERNAL and "/srv" not in internal.message


@pytest.mark.parametrize(
    ("now", "period", "boundary"),
    [
        (
            datetime(2024, 5, 1, 12, 30, tzinfo=UTC),
            timedelta(hours=1),
            datetime(2024, 5, 1, 12, tzinfo=UTC),
        ),
        (
            datetime(2024, 5, 1, 12, tzinfo=UTC),
            timedelta(hours=1),
            datetime(2024, 5, 1, 12, tzinfo=UTC),
        ),
        (
            datetime(2024, 5, 1, 23, 59, tzinfo=UTC),
            timedelta(days=1),
            datetime(2024, 5, 1, tzinfo=UTC),
        ),
        (
            datetime(1970, 1, 1, 0, 0, 59, tzinfo=UTC),
            timedelta(minutes=1),
            datetime(1970, 1, 1, tzinfo=UTC),
        ),
    ],
)
def test_schedule_boundaries_are_multiples_of_the_period(
    now: datetime, period: timedelta, boundary: datetime
) -> None:
    assert due_boundary(now, period) == boundary


def test_command_line_times_are_iso_8601_or_now_and_naive_means_utc() -> None:
    assert parse_time("2024-05-01") == datetime(2024, 5, 1, tzinfo=UTC)
    assert parse_time("2024-05-01T12:00:00Z") == datetime(2024, 5, 1, 12, tzinfo=UTC)
    assert parse_time("2024-05-01T14:00:00+02:00") == datetime(2024, 5, 1, 12, tzinfo=UTC)
    assert abs(parse_time("now") - datetime.now(UTC)) < timedelta(seconds=5)
    with pytest.raises(ValueError, match="not a time"):
        parse_time("yesterday")


def test_the_server_event_loop_is_uvloop_or_asyncios_own() -> None:
    import uvloop

    from skewless.server.app import event_loop_factory

    factory = event_loop_factory("uvloop")
    assert factory is not None
    loop = factory()
    try:
        assert isinstance(loop, uvloop.Loop)
    finally:
        loop.close()
    assert event_loop_factory("asyncio") is None  # asyncio.Runner then makes its own
