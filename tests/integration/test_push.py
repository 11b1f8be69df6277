"""Push: validation, compare-and-set under concurrency, and the offline append."""

from __future__ import annotations

import asyncio
import random
import threading
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import redis
import redis.asyncio as aioredis

from skewless.core.config import RepoConfig
from skewless.core.errors import InvalidArgumentError, NotFoundError
from skewless.offline.offline_store import history_files
from skewless.offline.push import prepare_push
from skewless.online.codec import decode_value
from skewless.online.writer import OnlineWriter, prepare_rows
from skewless.registry.registry_store import RegistryStore
from skewless.server.context import ServerContext
from skewless.server.registry_holder import RegistryHolder
from skewless.server.services.online import OnlineServicer
from skewless.v1 import online_service_pb2
from tests.integration.matfixtures import T0, make_config, make_registry

DEST = online_service_pb2.PushDestination


def ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def rows(ids: list[int], hours: list[float], rate: list[float | None] | None = None) -> pa.Table:
    n = len(ids)
    return pa.table(
        {
            "driver_id": pa.array(ids, pa.int64()),
            "ts": pa.array([T0 + timedelta(hours=h) for h in hours], pa.timestamp("us", tz="UTC")),
            "conv_rate": pa.array(
                rate if rate is not None else [float(h) for h in hours], pa.float64()
            ),
            "trips": pa.array([int(h) for h in hours], pa.int32()),
            "label": pa.array([f"h{h}" for h in hours], pa.string()),
            "extra": pa.array(["ignored"] * n),
        }
    )


@pytest.fixture
def config(tmp_path: Path, redis_url: str) -> RepoConfig:
    config = make_config(tmp_path / "repo", redis_url, project="push")
    RegistryStore(config.storage).save(make_registry(push=True))
    return config


@pytest.fixture
def ctx(config: RepoConfig):
    holder = RegistryHolder(RegistryStore(config.storage))
    holder.reload()
    return ServerContext(
        config=config, registry=holder, redis=aioredis.Redis.from_url(config.redis_url)
    )


def stored(url: str, view: str = "driver_live") -> dict[int, dict]:
    client = redis.Redis.from_url(url)
    out = {}
    for key in client.scan_iter(match=f"push:{view}:*".encode()):
        driver = int(key.decode().rsplit("{", 1)[1].rstrip("}"))
        out[driver] = {
            f: decode_value(v) if not f.startswith(b"_") else int(v)
            for f, v in client.hgetall(key).items()
        }
    client.close()
    return out


def run(coro):
    return asyncio.run(coro)


async def push_features(ctx: ServerContext, request: online_service_pb2.PushFeaturesRequest):
    """The server's PushFeatures handler, called directly (its context is not used)."""
    return await OnlineServicer(ctx).push_features(request, None)


def test_push_writes_online_and_appends_history(ctx: ServerContext, config: RepoConfig) -> None:
    async def go():
        request = online_service_pb2.PushFeaturesRequest(
            push_source="driver_push", arrow_ipc_stream=ipc(rows([1, 2], [5, 6]))
        )
        first = await push_features(ctx, request)
        again = await push_features(
            ctx,
            online_service_pb2.PushFeaturesRequest(
                push_source="driver_push", arrow_ipc_stream=ipc(rows([1], [3]))
            ),
        )
        await ctx.redis.aclose()
        return first, again

    first, again = run(go())
    assert (first.row_count, first.online_rows_written) == (2, 2)
    assert (again.row_count, again.online_rows_written) == (1, 0)  # older than stored
    online = stored(config.redis_url)
    assert (
        online[1][b"conv_rate"] == 5.0 and online[1][b"trips"] == 5 and online[1][b"label"] == "h5"
    )
    files = history_files(config, "driver_live")
    history = pa.concat_tables(pq.read_table(f) for f in files)
    assert history.num_rows == 3  # history keeps every pushed row, late ones included
    assert history.column_names == [
        "driver_id",
        "event_timestamp",
        "created_timestamp",
        "conv_rate",
        "trips",
        "label",
    ]
    assert history.schema.field("trips").type == pa.int64()


def test_destination_online_only_and_view_target(ctx: ServerContext, config: RepoConfig) -> None:
    async def go():
        request = online_service_pb2.PushFeaturesRequest(
            feature_view="driver_live",
            arrow_ipc_stream=ipc(rows([4], [1])),
            destination=DEST.PUSH_DESTINATION_ONLINE,
        )
        out = await push_features(ctx, request)
        await ctx.redis.aclose()
        return out

    assert run(go()).online_rows_written == 1
    assert 4 in stored(config.redis_url)
    assert history_files(config, "driver_live") == []


@pytest.mark.parametrize(
    ("table", "needle", "column"),
    [
        (rows([1, 2], [1, 2]).drop_columns(["trips"]), "missing", "trips"),
        (
            rows([1], [1]).set_column(2, "conv_rate", pa.array(["x"])),
            "declares FLOAT64",
            "conv_rate",
        ),
        (rows([1], [1]).set_column(3, "trips", pa.array([1.5])), "declares INT64", "trips"),
        (
            rows([1, 2, 3], [1, 2, 3]).set_column(
                0, "driver_id", pa.array([1, None, 3], pa.int64())
            ),
            "row 1",
            "driver_id",
        ),
        (
            rows([1, 2, 3], [1, 2, 3]).set_column(
                1, "ts", pa.array([T0, T0, None], pa.timestamp("us", tz="UTC"))
            ),
            "row 2",
            "ts",
        ),
    ],
)
def test_bad_rows_are_refused_and_nothing_is_written(
    ctx: ServerContext, config: RepoConfig, table: pa.Table, needle: str, column: str
) -> None:
    async def go():
        try:
            with pytest.raises(InvalidArgumentError) as info:
                await push_features(
                    ctx,
                    online_service_pb2.PushFeaturesRequest(
                        push_source="driver_push", arrow_ipc_stream=ipc(table)
                    ),
                )
            return info.value
        finally:
            await ctx.redis.aclose()

    error = run(go())
    assert needle in error.message and repr(column) in error.message
    assert error.field == f"arrow_ipc_stream.{column}" and error.metadata["column"] == column
    assert stored(config.redis_url) == {}
    assert history_files(config, "driver_live") == []


def test_unknown_targets_and_garbage(config: RepoConfig) -> None:
    registry = RegistryStore(config.storage).load()
    with pytest.raises(NotFoundError, match="push source"):
        prepare_push(registry, rows([1], [1]), push_source="nope")
    with pytest.raises(NotFoundError, match="feature view"):
        prepare_push(registry, rows([1], [1]), feature_view="nope")
    from skewless.offline.arrow_ipc import read_ipc_stream

    with pytest.raises(InvalidArgumentError, match="Arrow IPC"):
        read_ipc_stream(b"not arrow at all", field="arrow_ipc_stream")


def test_naive_timestamps_are_utc_and_nulls_allowed_in_features(config: RepoConfig) -> None:
    registry = RegistryStore(config.storage).load()
    table = rows([1, 2], [1, 2], rate=[None, 2.0]).set_column(
        1, "ts", pa.array([(T0 + timedelta(hours=1)).replace(tzinfo=None)] * 2, pa.timestamp("ms"))
    )
    prepared = prepare_push(registry, table, push_source="driver_push")
    view = prepared.views[0].table
    assert view["event_timestamp"].type == pa.timestamp("us", tz="UTC")
    assert view["event_timestamp"][0].as_py() == T0 + timedelta(hours=1)
    assert view["conv_rate"].null_count == 1


def test_concurrent_pushes_keep_the_newest(ctx: ServerContext, config: RepoConfig) -> None:
    """Many concurrent pushes (async and from threads) of shuffled times: the max wins."""
    hours = list(range(60))
    random.Random(7).shuffle(hours)

    async def go():
        async def one(h: int):
            request = online_service_pb2.PushFeaturesRequest(
                feature_view="driver_live",
                arrow_ipc_stream=ipc(rows([1, 2, 3], [h, h, h])),
                destination=DEST.PUSH_DESTINATION_ONLINE,
            )
            return await push_features(ctx, request)

        results = await asyncio.gather(*(one(h) for h in hours[:30]))
        await ctx.redis.aclose()
        return results

    registry = RegistryStore(config.storage).load()
    plan_rows = [
        prepare_push(registry, rows([1, 2, 3], [h, h, h]), feature_view="driver_live")
        for h in hours[30:]
    ]

    def thread_push(items):
        writer = OnlineWriter.from_url(config.redis_url)
        for prepared in items:
            item = prepared.views[0]
            writer.write(
                prepare_rows(
                    "push",
                    "driver_live",
                    item.table,
                    join_keys=item.plan.key_names,
                    features=item.plan.features,
                )
            )
        writer.close()

    threads = [threading.Thread(target=thread_push, args=(plan_rows[i::3],)) for i in range(3)]
    for t in threads:
        t.start()
    run(go())
    for t in threads:
        t.join()
    online = stored(config.redis_url)
    assert {d: v[b"conv_rate"] for d, v in online.items()} == {1: 59.0, 2: 59.0, 3: 59.0}
    assert online[2][b"_ts"] == int((T0 + timedelta(hours=59)).timestamp() * 1_000_000)


def test_created_time_breaks_event_time_ties(config: RepoConfig) -> None:
    writer = OnlineWriter.from_url(config.redis_url)
    registry = RegistryStore(config.storage).load()

    def write(rate: float, created_seconds: int | None) -> int:
        table = rows([9], [1], rate=[rate])
        created = None if created_seconds is None else T0 + timedelta(seconds=created_seconds)
        table = table.append_column("created", pa.array([created], pa.timestamp("us", tz="UTC")))
        item = prepare_push(registry, table, feature_view="driver_live").views[0]
        return writer.write(
            prepare_rows(
                "push",
                "driver_live",
                item.table,
                join_keys=["driver_id"],
                features=item.plan.features,
            )
        )

    assert write(1.0, 10) == 1
    assert write(2.0, 5) == 0  # same event time, older created time
    assert write(3.0, None) == 0  # no created time sorts first
    assert write(4.0, 10) == 1  # a replay of the same times replaces (idempotent)
    assert write(5.0, 11) == 1
    writer.close()
    assert stored(config.redis_url)[9][b"conv_rate"] == 5.0


# --- Redis Cluster ---------------------------------------------------------------------------


@pytest.fixture
def cluster_url(redis_cluster) -> str:
    """The session's Redis Cluster, flushed (its fixture is shared with the contract suite)."""
    for node in redis_cluster.nodes:
        client = redis.Redis(port=node.port)
        client.flushall()
        client.close()
    return redis_cluster.url


def test_materialize_and_push_on_redis_cluster(tmp_path: Path, cluster_url: str) -> None:
    import dataclasses

    from redis.cluster import RedisCluster

    from skewless.materialization.pipeline import materialize
    from tests.integration.matfixtures import driver_rows, write_source

    config = dataclasses.replace(
        make_config(tmp_path / "repo", cluster_url, project="push"), redis_cluster=True
    )
    write_source(config, driver_rows(n_drivers=300, n_times=4))
    registry = make_registry(push=True)
    RegistryStore(config.storage).save(registry)
    result = materialize(config, registry, T0, T0 + timedelta(hours=4), views=["driver_stats"])
    assert result.views[0].online_rows_written == 300
    client = RedisCluster.from_url(cluster_url)
    try:
        stored_rates = {
            d: decode_value(client.hget(f"push:driver_stats:{{{d}}}".encode(), "conv_rate"))
            for d in range(300)
        }
        assert stored_rates == {d: float(d * 1000 + 3) for d in range(300)}
        assert len({client.keyslot(f"push:driver_stats:{{{d}}}") for d in range(300)}) > 100

        holder = RegistryHolder(RegistryStore(config.storage))
        holder.reload()

        async def go():
            ctx = ServerContext(
                config=config, registry=holder, redis=aioredis.RedisCluster.from_url(cluster_url)
            )
            try:
                newer = await push_features(
                    ctx,
                    online_service_pb2.PushFeaturesRequest(
                        feature_view="driver_stats",
                        arrow_ipc_stream=ipc(rows(list(range(0, 300, 2)), [10] * 150)),
                    ),
                )
                older = await push_features(
                    ctx,
                    online_service_pb2.PushFeaturesRequest(
                        feature_view="driver_stats",
                        arrow_ipc_stream=ipc(rows(list(range(300)), [1] * 300)),
                    ),
                )
                return newer, older
            finally:
                await ctx.redis.aclose()

        newer, older = run(go())
        assert newer.online_rows_written == 150 and older.online_rows_written == 0
        assert decode_value(client.hget(b"push:driver_stats:{4}", "conv_rate")) == 10.0
        assert decode_value(client.hget(b"push:driver_stats:{5}", "conv_rate")) == 5003.0
    finally:
        client.close()


def test_push_over_grpc_with_rich_errors(config: RepoConfig) -> None:
    import grpc
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    from skewless.server.app import create_server
    from skewless.v1 import online_service_pb2_grpc

    async def go():
        server, port = create_server(config)
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = online_service_pb2_grpc.OnlineServiceStub(channel)
                ok = await stub.PushFeatures(
                    online_service_pb2.PushFeaturesRequest(
                        push_source="driver_push", arrow_ipc_stream=ipc(rows([1, 2], [3, 4]))
                    )
                )
                bad = rows([1, 2, 3], [1, 2, 3]).set_column(
                    0, "driver_id", pa.array([1, 2, None], pa.int64())
                )
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await stub.PushFeatures(
                        online_service_pb2.PushFeaturesRequest(
                            push_source="driver_push", arrow_ipc_stream=ipc(bad)
                        )
                    )
                return ok, info.value
        finally:
            await server.stop(0)

    ok, error = run(go())
    assert (ok.row_count, ok.online_rows_written) == (2, 2)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "row 2" in error.details() and "'driver_id'" in error.details()
    status = rpc_status.from_call(error)
    violations = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            violations = [v.field for v in bad_request.field_violations]
    assert violations == ["arrow_ipc_stream.driver_id"]
    assert set(stored(config.redis_url)) == {1, 2}
    assert sum(pq.read_table(f).num_rows for f in history_files(config, "driver_live")) == 2


def test_writer_recovers_when_the_script_cache_is_flushed(config: RepoConfig) -> None:
    registry = RegistryStore(config.storage).load()
    writer = OnlineWriter.from_url(config.redis_url)

    def write(hour: int) -> int:
        item = prepare_push(registry, rows([1, 2], [hour, hour]), feature_view="driver_live").views[
            0
        ]
        encoded = prepare_rows(
            "push", "driver_live", item.table, join_keys=["driver_id"], features=item.plan.features
        )
        return writer.write(encoded)

    assert write(1) == 2
    redis.Redis.from_url(config.redis_url).script_flush()
    assert write(2) == 2  # NOSCRIPT: reloaded and written
    assert write(0) == 0
    writer.close()
    assert stored(config.redis_url)[2][b"conv_rate"] == 2.0
