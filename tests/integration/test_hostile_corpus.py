"""A corpus of hostile calls across every RPC, against `skewless serve` with auth on.

This extends test_hostile_input (which proves each defect class in isolation) with one
long run of at least 300 bad calls against a real server process with token
authentication, and checks what must hold across all of them together:

- every call ends with a deliberate status: never UNKNOWN or INTERNAL;
- no call outlives its deadline by more than 1 s;
- no message carries a file's content, a server path, an exception class or a trace;
- the server stays SERVING, its memory and open files do not grow without bound;
- the online values and the offline history read before the corpus are identical
  after it (a refused call changes no store).

Categories: random and truncated protobuf bytes (sent raw through generic channel
methods), hypothesis-generated requests, huge names, unicode and NUL, SQL-looking
names, oversize and deeply nested messages, bad Arrow IPC, hostile `path`/`sql`
entity sources, bad credentials, cancelled streams and 1 ms deadlines.

Memory is bounded on purpose: random payloads are at most 4 KiB, huge names 1 MiB, one
oversize message 65 MiB, each built, sent and dropped; the test process and the server
are both watched (an earlier corpus that kept payloads alive grew to tens of GiB).
"""

from __future__ import annotations

import datetime as dt
import os
import random
import resource
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pyarrow as pa
import pytest
from google.protobuf import timestamp_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from skewless.client import Client
from skewless.core.config import RepoConfig
from skewless.online.embedded_redis import EmbeddedRedis
from skewless.v1 import (
    historical_service_pb2,
    materialization_service_pb2,
    online_service_pb2,
    registry_service_pb2,
    types_pb2,
)

from .auth_repo import token_file, write_repo
from .served import ServedProcess, serve
from .test_hostile_input import _methods, _valid_request, offline_state

BAD_CODES = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}
ADMIN = (("authorization", "Bearer admin-token"),)
UTC_US = pa.timestamp("us", tz="UTC")
T0 = dt.datetime(2024, 5, 1, 12, tzinfo=dt.UTC)
_LEAKS = (
    "Traceback",
    "DecodeError",
    "Exception",
    "ArrowInvalid",
    "duckdb.",
    "root:x:",
    'File "',
    "site-packages",
)


@dataclass
class Outcome:
    what: str
    code: grpc.StatusCode
    message: str
    elapsed: float
    timeout: float


@dataclass
class Corpus:
    target: str
    repo: Path
    outcomes: list[Outcome] = field(default_factory=list)

    def channel(self) -> grpc.Channel:
        return grpc.insecure_channel(
            self.target, options=[("grpc.max_send_message_length", 80 * 1024 * 1024)]
        )

    def record(self, what: str, call: Callable[[], Any], timeout: float) -> None:
        started = time.monotonic()
        code, message = grpc.StatusCode.OK, ""
        try:
            call()
        except grpc.FutureCancelledError:
            code = grpc.StatusCode.CANCELLED
        except grpc.RpcError as exc:
            code = exc.code()
            message = exc.details() or ""
            status = rpc_status.from_call(exc)  # type: ignore[arg-type]
            if status is not None:
                message += " " + str(status)
        self.outcomes.append(Outcome(what, code, message, time.monotonic() - started, timeout))


def _unary(channel: grpc.Channel, path: str, payload: bytes, timeout: float, md: Any) -> Any:
    return channel.unary_unary(path)(payload, timeout=timeout, metadata=md)


def _stream(
    channel: grpc.Channel, path: str, payloads: list[bytes], timeout: float, md: Any
) -> Any:
    return list(channel.stream_stream(path)(iter(payloads), timeout=timeout, metadata=md))


def _send(
    corpus: Corpus,
    channel: grpc.Channel,
    what: str,
    path: str,
    streaming: bool,
    payloads: list[bytes],
    *,
    timeout: float = 5.0,
    md: Any = ADMIN,
) -> None:
    if streaming:
        corpus.record(what, lambda: _stream(channel, path, payloads, timeout, md), timeout)
    else:
        corpus.record(what, lambda: _unary(channel, path, payloads[0], timeout, md), timeout)


def _rows(ids: list[int]) -> pa.Table:
    n = len(ids)
    return pa.table(
        {
            "driver_id": pa.array(ids, pa.int64()),
            "ts": pa.array([T0] * n, UTC_US),
            "created": pa.nulls(n, UTC_US),
            "conv_rate": pa.array([0.25 * i for i in range(n)], pa.float64()),
            "trips": pa.array(list(range(n)), pa.int64()),
            "note": pa.array([f"n{i}" for i in range(n)], pa.string()),
        }
    )


def _ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def _online_request(**changes: Any) -> online_service_pb2.GetOnlineFeaturesRequest:
    request = online_service_pb2.GetOnlineFeaturesRequest(**changes)
    request.entities["driver_id"].values.add(int64_value=1)
    return request


def _historical(query: historical_service_pb2.HistoricalQuery) -> bytes:
    return historical_service_pb2.GetHistoricalFeaturesRequest(query=query).SerializeToString()


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _state(served: ServedProcess, config: RepoConfig) -> tuple[Any, ...]:
    with Client(served.target, token="admin-token", timeout=10) as client:
        online = client.get_online_features({"driver_id": [1, 2, 3, 4]}, feature_service="live")
        entity_rows = pa.table(
            {
                "driver_id": pa.array([1, 2, 3], pa.int64()),
                "event_timestamp": pa.array([T0 + dt.timedelta(hours=1)] * 3, UTC_US),
            }
        )
        history = client.get_historical_features(entity_rows, feature_service="live")
    return online.response.SerializeToString(deterministic=True), history, offline_state(config)


@pytest.fixture
def corpus_server(
    redis_server: EmbeddedRedis, tmp_path: Path
) -> Iterator[tuple[ServedProcess, RepoConfig]]:
    token_file(tmp_path / "tokens.yaml")
    config = write_repo(tmp_path, redis_server.url, "mode: token\ntoken_file: tokens.yaml\n")
    (tmp_path / "labels.csv").write_text("driver_id,event_timestamp\n1,2024-05-01T13:00:00Z\n")
    with serve(tmp_path) as served:
        with Client(served.target, token="admin-token", timeout=10) as client:
            client.push_features(_rows([1, 2, 3]), push_source="driver_push")
        yield served, config


def _random_bytes(corpus: Corpus, channel: grpc.Channel) -> None:
    rng = random.Random(1234)
    for path, streaming in _methods():
        valid = _valid_request(path)
        for i in range(8):
            noise = rng.randbytes(rng.randint(0, 4096))
            _send(corpus, channel, f"random {path} #{i}", path, streaming, [noise])
        for cut in sorted({len(valid) // 3, len(valid) // 2, max(len(valid) - 1, 0)}):
            _send(corpus, channel, f"truncated {path} at {cut}", path, streaming, [valid[:cut]])


def _deep_nesting(corpus: Corpus, channel: grpc.Channel) -> None:
    tag = bytes([0xBB, 0x3E])  # field 999, wire type 3 (start group), as a varint
    end = bytes([0xBC, 0x3E])  # field 999, wire type 4 (end group)
    nested = tag * 20_000 + end * 20_000
    for path, streaming in _methods():
        _send(corpus, channel, f"deeply nested {path}", path, streaming, [nested])
    # A length-delimited unknown field nested 5,000 deep, each level a message.
    inner = b""
    for _ in range(5_000):
        inner = b"\xca\x3e" + _varint(len(inner)) + inner  # field 1001, length-delimited
    path = "/skewless.v1.OnlineService/GetOnlineFeatures"
    _send(corpus, channel, "nested unknown messages", path, False, [inner])


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


_HOSTILE_NAMES = [
    "x" * 2**20,
    "driver_live\x00; DROP TABLE x",
    "driver_live'; DROP TABLE feature_views; --",
    '" OR 1=1 --',
    "../../etc/passwd",
    "driver_live:trips\x00",
    "ドライバー:トリップ",
    "\U0001f480" * 100,
    "a\u0301\u200b\u202e",
    "*",
    "driver_*",
    "SELECT * FROM driver_live",
    "${jndi:ldap://x}",
    "%s%s%s%n",
]


def _hostile_names(corpus: Corpus, channel: grpc.Channel) -> None:
    online = "/skewless.v1.OnlineService/GetOnlineFeatures"
    registry = "/skewless.v1.RegistryService/"
    for name in _HOSTILE_NAMES:
        label = repr(name[:24])
        _send(
            corpus,
            channel,
            f"service {label}",
            online,
            False,
            [_online_request(feature_service=name).SerializeToString()],
        )
        request = _online_request()
        request.features.features.extend([name, f"driver_live:{name}"])
        _send(corpus, channel, f"features {label}", online, False, [request.SerializeToString()])
        for method, message in (
            ("GetFeatureView", registry_service_pb2.GetFeatureViewRequest(name=name)),
            ("GetFeatureService", registry_service_pb2.GetFeatureServiceRequest(name=name)),
            ("GetEntity", registry_service_pb2.GetEntityRequest(name=name)),
            ("SearchFeatures", registry_service_pb2.SearchFeaturesRequest(query=name)),
        ):
            _send(
                corpus,
                channel,
                f"{method} {label}",
                registry + method,
                False,
                [message.SerializeToString()],
            )
        _send(
            corpus,
            channel,
            f"job {label}",
            "/skewless.v1.MaterializationService/GetMaterializationJob",
            False,
            [
                materialization_service_pb2.GetMaterializationJobRequest(
                    job_id=name
                ).SerializeToString()
            ],
        )
        start = materialization_service_pb2.StartMaterializationRequest(
            feature_views=[name], incremental=True, end_time=timestamp_pb2.Timestamp(seconds=60)
        )
        _send(
            corpus,
            channel,
            f"materialize {label}",
            "/skewless.v1.MaterializationService/StartMaterialization",
            False,
            [start.SerializeToString()],
        )
        push = online_service_pb2.PushFeaturesRequest(push_source=name, arrow_ipc_stream=b"")
        _send(
            corpus,
            channel,
            f"push {label}",
            "/skewless.v1.OnlineService/PushFeatures",
            False,
            [push.SerializeToString()],
        )
    # Many references (10,000) and a key with many values (bounded: ~1 MB each).
    request = _online_request()
    request.features.features.extend(f"driver_live:f{i}" for i in range(10_000))
    _send(corpus, channel, "10,000 refs", online, False, [request.SerializeToString()])
    request = online_service_pb2.GetOnlineFeaturesRequest(feature_service="live")
    for _ in range(100_000):
        request.entities["driver_id"].values.add(int64_value=7)
    _send(corpus, channel, "100,000 entity rows", online, False, [request.SerializeToString()])
    for key in ("driver_id\x00", "", "x" * 70_000):
        bad = online_service_pb2.GetOnlineFeaturesRequest(feature_service="live")
        bad.entities[key].values.add(int64_value=1)
        _send(corpus, channel, f"entity key {key[:10]!r}", online, False, [bad.SerializeToString()])


def _oversize(corpus: Corpus, channel: grpc.Channel) -> None:
    push = online_service_pb2.PushFeaturesRequest(
        push_source="driver_push", arrow_ipc_stream=b"\0" * (65 * 1024 * 1024)
    ).SerializeToString()
    _send(
        corpus,
        channel,
        "65 MiB push",
        "/skewless.v1.OnlineService/PushFeatures",
        False,
        [push],
        timeout=30,
    )
    del push


def _bad_arrow(corpus: Corpus, channel: grpc.Channel) -> None:
    push_path = "/skewless.v1.OnlineService/PushFeatures"
    good = _ipc(_rows([9]))
    other = _ipc(pa.table({"x": pa.array([1.0])}))
    wrong_types = _ipc(_rows([9]).set_column(4, "trips", pa.array(["nine"])))
    for what, data in (
        ("empty", b""),
        ("garbage", b"\xff" * 200),
        ("truncated", good[: len(good) // 2]),
        ("schema only", good[:200]),
        ("another schema", other),
        ("wrong types", wrong_types),
        ("two streams", good + good),
        ("flipped byte", good[:120] + bytes([good[120] ^ 0xFF]) + good[121:]),
    ):
        request = online_service_pb2.PushFeaturesRequest(
            push_source="driver_push", arrow_ipc_stream=data
        )
        _send(
            corpus, channel, f"push arrow {what}", push_path, False, [request.SerializeToString()]
        )
    hist = "/skewless.v1.HistoricalService/GetHistoricalFeatures"
    pb = historical_service_pb2
    query = pb.HistoricalQuery(feature_service="live", inline=pb.InlineEntityRows())
    batch = pa.record_batch(
        {"driver_id": pa.array([1], pa.int64()), "event_timestamp": pa.array([T0], UTC_US)}
    )
    schema = batch.schema.serialize().to_pybytes()
    body = batch.serialize().to_pybytes()
    for what, (schema_bytes, batch_bytes, rows) in {
        "garbage schema": (b"\x00" * 64, body, 1),
        "garbage batch": (schema, b"\x07" * 64, 1),
        "row count lies": (schema, body, 5),
        "truncated batch": (schema, body[:-8], 1),
    }.items():
        messages = [
            pb.GetHistoricalFeaturesRequest(query=query).SerializeToString(),
            pb.GetHistoricalFeaturesRequest(
                arrow_schema=pb.ArrowSchema(serialized_schema=schema_bytes),
                entity_batch=pb.ArrowRecordBatch(
                    serialized_record_batch=batch_bytes, row_count=rows
                ),
            ).SerializeToString(),
        ]
        _send(corpus, channel, f"historical {what}", hist, True, messages, timeout=10)
    # A batch before the schema, a second query, nothing after the query.
    batch_first = pb.GetHistoricalFeaturesRequest(
        entity_batch=pb.ArrowRecordBatch(serialized_record_batch=body, row_count=1)
    ).SerializeToString()
    first = pb.GetHistoricalFeaturesRequest(query=query).SerializeToString()
    for what, messages in {
        "batch before schema": [first, batch_first],
        "query twice": [first, first],
        "query only": [first],
        "nothing": [],
        "no query": [batch_first],
    }.items():
        _send(corpus, channel, f"historical {what}", hist, True, messages, timeout=10)


_HOSTILE_SQL = [
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM read_text('/etc/hostname')",
    "SELECT 1::BIGINT AS driver_id, now() AS event_timestamp, getenv('HOME') AS h",
    "COPY (SELECT 1) TO '/tmp/skewless-corpus-pwned.csv'",
    "ATTACH '/tmp/skewless-corpus.db' AS x",
    "INSTALL httpfs",
    "LOAD httpfs",
    "SET enable_external_access = true",
    "PRAGMA database_list",
    "SELECT * FROM duckdb_settings()",
    "SELECT * FROM glob('/**')",
    "SELECT 1; DROP TABLE x",
    "SELECT * FROM read_parquet('../../../../etc/shadow')",
    "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT * FROM r",
    "SELECT repeat('x', 300000000) AS driver_id",
    "\x00",
    "",
]
_HOSTILE_PATHS = [
    "/etc/passwd",
    "../../../../etc/passwd",
    "/proc/self/environ",
    "labels.csv\x00.parquet",
    "/dev/zero",
    "/dev/urandom",
    "skewless.yaml",
    "tokens.yaml",
    "*",
    "**/*.yaml",
    "x" * 5000,
    "",
]


def _entity_sources(corpus: Corpus, channel: grpc.Channel) -> None:
    hist = "/skewless.v1.HistoricalService/GetHistoricalFeatures"
    pb = historical_service_pb2
    for sql in _HOSTILE_SQL:
        payload = _historical(pb.HistoricalQuery(feature_service="live", sql=sql))
        _send(corpus, channel, f"sql {sql[:30]!r}", hist, True, [payload], timeout=10)
    for path in _HOSTILE_PATHS:
        payload = _historical(pb.HistoricalQuery(feature_service="live", path=path))
        _send(corpus, channel, f"path {path[:30]!r}", hist, True, [payload], timeout=10)


def _credentials(corpus: Corpus, channel: grpc.Channel) -> None:
    path = "/skewless.v1.RegistryService/GetRegistryInfo"
    for i, md in enumerate(
        [
            (),
            (("authorization", "Bearer "),),
            (("authorization", "Bearer " + "a" * 8000),),
            (("authorization", "Basic YWRtaW46YWRtaW4="),),
            (("authorization", "Bearer admin-token-x"),),
            (("authorization", "bearer admin-token"), ("authorization", "Bearer x")),
            (("authorization", "Bearer nobody-token"),),
        ]
    ):
        _send(corpus, channel, f"credentials #{i}", path, False, [b""], md=md)
    # Bad credentials on the streaming RPC too.
    hist = "/skewless.v1.HistoricalService/GetHistoricalFeatures"
    payload = _historical(
        historical_service_pb2.HistoricalQuery(feature_service="live", path="labels.csv")
    )
    _send(corpus, channel, "historical without token", hist, True, [payload], md=())


def _deadlines_and_cancels(corpus: Corpus, channel: grpc.Channel) -> None:
    for path, streaming in _methods():
        _send(
            corpus, channel, f"1 ms {path}", path, streaming, [_valid_request(path)], timeout=0.001
        )
    hist = "/skewless.v1.HistoricalService/GetHistoricalFeatures"
    pb = historical_service_pb2
    payload = _historical(pb.HistoricalQuery(feature_service="live", path="labels.csv"))
    for i in range(10):

        def cancelled(delay: float = 0.002 * i) -> None:
            call = channel.stream_stream(hist)(iter([payload]), timeout=10, metadata=ADMIN)
            time.sleep(delay)
            call.cancel()
            list(call)

        corpus.record(f"cancelled stream #{i}", cancelled, 10)

    # A stream whose client never finishes sending: the deadline ends it.
    def hanging() -> None:
        def requests() -> Iterator[bytes]:
            yield _historical(
                pb.HistoricalQuery(feature_service="live", inline=pb.InlineEntityRows())
            )
            time.sleep(3)

        list(channel.stream_stream(hist)(requests(), timeout=0.5, metadata=ADMIN))

    corpus.record("half-open stream", hanging, 0.5)
    online = "/skewless.v1.OnlineService/GetOnlineFeatures"
    request = _online_request(feature_service="live").SerializeToString()
    for i in range(5):
        future = channel.unary_unary(online).future(request, timeout=5, metadata=ADMIN)
        future.cancel()
        corpus.record(f"cancelled unary #{i}", future.result, 5)


def _generated(corpus: Corpus, channel: grpc.Channel) -> None:
    names = st.text(max_size=80)
    online_requests = st.builds(
        lambda service, refs, keys, full: _generated_online(service, refs, keys, full),
        st.one_of(st.none(), names),
        st.lists(names, max_size=5),
        st.dictionaries(names, st.lists(st.integers(-(2**63), 2**63 - 1), max_size=5), max_size=3),
        st.booleans(),
    )
    starts = st.builds(
        lambda views, seconds, nanos, incremental: (
            materialization_service_pb2.StartMaterializationRequest(
                feature_views=views,
                incremental=incremental,
                start_time=timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos),
                end_time=timestamp_pb2.Timestamp(seconds=seconds + 1, nanos=nanos),
            )
        ),
        st.lists(names, max_size=3),
        st.integers(-(2**40), 2**40),
        st.integers(-5, 2 * 10**9),
        st.booleans(),
    )
    queries = st.builds(
        lambda service, refs, size, compression, label: (
            historical_service_pb2.HistoricalQuery(
                feature_service=service,
                batch_size=size,
                compression=compression,
                label_time_column=label,
                sql=f"SELECT 1::BIGINT AS driver_id, now() AS {label or 'event_timestamp'}",
            )
            if service
            else historical_service_pb2.HistoricalQuery(
                features=types_pb2.FeatureList(features=refs), path="labels.csv"
            )
        ),
        names,
        st.lists(names, max_size=3),
        st.integers(-(2**31), 2**31 - 1),
        st.integers(-3, 10),
        names,
    )
    lists = st.builds(
        lambda size, token: registry_service_pb2.ListFeatureViewsRequest(
            page_size=size, page_token=token
        ),
        st.integers(-(2**31), 2**31 - 1),
        names,
    )

    @settings(
        max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None
    )
    @given(online_requests, starts, queries, lists)
    def run(
        online: online_service_pb2.GetOnlineFeaturesRequest,
        start: materialization_service_pb2.StartMaterializationRequest,
        query: historical_service_pb2.HistoricalQuery,
        listing: registry_service_pb2.ListFeatureViewsRequest,
    ) -> None:
        _send(
            corpus,
            channel,
            "generated online",
            "/skewless.v1.OnlineService/GetOnlineFeatures",
            False,
            [online.SerializeToString()],
        )
        _send(
            corpus,
            channel,
            "generated start",
            "/skewless.v1.MaterializationService/StartMaterialization",
            False,
            [start.SerializeToString()],
        )
        _send(
            corpus,
            channel,
            "generated historical",
            "/skewless.v1.HistoricalService/GetHistoricalFeatures",
            True,
            [historical_service_pb2.GetHistoricalFeaturesRequest(query=query).SerializeToString()],
            timeout=10,
        )
        _send(
            corpus,
            channel,
            "generated list",
            "/skewless.v1.RegistryService/ListFeatureViews",
            False,
            [listing.SerializeToString()],
        )

    run()


def _generated_online(
    service: str | None, refs: list[str], keys: dict[str, list[int]], full: bool
) -> online_service_pb2.GetOnlineFeaturesRequest:
    request = online_service_pb2.GetOnlineFeaturesRequest(full_feature_names=full)
    if service is not None:
        request.feature_service = service
    else:
        request.features.features.extend(refs)
    for key, values in keys.items():
        for value in values:
            request.entities[key].values.add(int64_value=value)
    return request


@pytest.mark.slow
def test_a_corpus_of_hostile_calls_changes_nothing_and_never_fails_internally(
    corpus_server: tuple[ServedProcess, RepoConfig],
) -> None:
    served, config = corpus_server
    pid = served.proc.pid
    before = _state(served, config)
    rss_before, fds_before = _rss(pid), _fds(pid)
    own_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    corpus = Corpus(served.target, config.root)
    rss_peak = rss_before
    with corpus.channel() as channel:
        for part in (
            _random_bytes,
            _deep_nesting,
            _hostile_names,
            _oversize,
            _bad_arrow,
            _entity_sources,
            _credentials,
            _deadlines_and_cancels,
            _generated,
        ):
            started = time.monotonic()
            part(corpus, channel)
            rss_peak = max(rss_peak, _rss(pid))
            print(
                f"{part.__name__}: {time.monotonic() - started:.1f} s, server RSS "
                f"{_rss(pid) / 2**20:.0f} MiB, {len(corpus.outcomes)} calls so far"
            )
            assert _rss(pid) < 3 * 2**30, (
                f"the server grew to {_rss(pid) / 2**30:.1f} GiB after {part.__name__}"
            )
        health = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
        assert health.status == health_pb2.HealthCheckResponse.SERVING
    outcomes = corpus.outcomes
    for o in outcomes:
        if o.code == grpc.StatusCode.OK and ("push" in o.what or "materialize" in o.what):
            print(f"accepted: {o.what}")
        if o.elapsed > 1.0:
            print(f"slow: {o.what} {o.code.name} {o.elapsed:.1f} s")
    assert len(outcomes) >= 300, len(outcomes)
    bad = [(o.what, o.code, o.message[:200]) for o in outcomes if o.code in BAD_CODES]
    internal = [line for line in served.lines if "Error" in line or "Traceback" in line]
    assert not bad, (bad[:10], "".join(served.lines[-80:]) if internal else "")
    late = [(o.what, round(o.elapsed, 2)) for o in outcomes if o.elapsed > o.timeout + 1.0]
    assert not late, late
    secrets = [str(config.root), str(Path.home()) + "/", "admin-token"]
    leaks = [
        (o.what, o.message[:300])
        for o in outcomes
        if any(marker in o.message for marker in (*_LEAKS, *secrets))
    ]
    assert not leaks, leaks[:5]
    codes = {o.code for o in outcomes}
    assert grpc.StatusCode.INVALID_ARGUMENT in codes and grpc.StatusCode.DEADLINE_EXCEEDED in codes
    assert grpc.StatusCode.UNAUTHENTICATED in codes and grpc.StatusCode.CANCELLED in codes
    assert not Path("/tmp/skewless-corpus-pwned.csv").exists()
    # Nothing changed in either store.
    assert _state(served, config) == before
    # Bounded memory and no leaked descriptors (a little slack for pooled sockets/threads).
    # An expression DuckDB cannot interrupt (a 300 MB `repeat`) may still be finishing
    # past its deadline: memory must come back once it has, descriptors at once.
    deadline = time.monotonic() + 30
    while _rss(pid) - rss_before > 400 * 2**20 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _fds(pid) <= fds_before + 16, (fds_before, _fds(pid))
    grown = _rss(pid) - rss_before
    assert grown < 400 * 2**20, (
        f"server RSS grew by {grown / 2**20:.0f} MiB (peak {rss_peak / 2**20:.0f})"
    )
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    assert own - own_before < 1 * 2**30, (
        f"the test process peaked {(own - own_before) / 2**20:.0f} MiB higher"
    )
    print(
        f"\n{len(outcomes)} calls; codes: "
        + ", ".join(
            f"{c.name}={sum(o.code == c for o in outcomes)}"
            for c in sorted(codes, key=lambda c: c.name)
        )
        + f"; server RSS {rss_before / 2**20:.0f} -> {_rss(pid) / 2**20:.0f} MiB"
        f" (peak {rss_peak / 2**20:.0f}),"
        f" fds {fds_before} -> {_fds(pid)}"
    )
