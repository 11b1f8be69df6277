"""grpcurl for operators: the documented commands (docs/clients.md) through reflection only.

grpcurl is installed into .tools/bin by `make tools`; the test is skipped only when that
binary is absent.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from skewless.online.embedded_redis import EmbeddedRedis

try:
    from . import client_harness as h
except ImportError:
    import client_harness as h  # type: ignore[no-redef]

pytestmark = pytest.mark.skipif(
    not h.GRPCURL.exists(), reason=f"grpcurl is not installed at {h.GRPCURL} (run `make tools`)"
)


@pytest.fixture(scope="module")
def fixture(
    redis_server: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[h.Fixture]:
    with h.serve_fixture(tmp_path_factory.mktemp("grpcurl-fixture"), redis_server.url) as served:
        yield served


def test_list_services(fixture: h.Fixture) -> None:
    result = h.grpcurl(fixture.addr, "list")
    assert result.returncode == 0, result.stderr
    services = set(result.stdout.split())
    assert {
        "skewless.v1.RegistryService",
        "skewless.v1.OnlineService",
        "skewless.v1.HistoricalService",
        "skewless.v1.MaterializationService",
        "grpc.health.v1.Health",
    } <= services


def test_list_methods_of_a_service(fixture: h.Fixture) -> None:
    result = h.grpcurl(fixture.addr, "list", "skewless.v1.OnlineService")
    assert result.returncode == 0, result.stderr
    assert "skewless.v1.OnlineService.GetOnlineFeatures" in result.stdout.split()


def test_describe_a_message(fixture: h.Fixture) -> None:
    result = h.grpcurl(fixture.addr, "describe", "skewless.v1.GetOnlineFeaturesRequest")
    assert result.returncode == 0, result.stderr
    assert "skewless.v1.GetOnlineFeaturesRequest is a message" in result.stdout
    assert "map<string, .skewless.v1.RepeatedValue> entities = 3;" in result.stdout


@pytest.mark.parametrize("service", ["", "skewless.v1.OnlineService"])
def test_health_check(fixture: h.Fixture, service: str) -> None:
    body = json.dumps({"service": service})
    result = h.grpcurl(fixture.addr, "grpc.health.v1.Health/Check", body=body)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"status": "SERVING"}


def test_list_feature_views(fixture: h.Fixture) -> None:
    result = h.grpcurl(fixture.addr, "skewless.v1.RegistryService/ListFeatureViews", body="{}")
    assert result.returncode == 0, result.stderr
    views = json.loads(result.stdout)["feature_views"]
    assert sorted(v["name"] for v in views) == ["customer_profile", "driver_stats"]


def test_get_online_features_with_a_json_body(fixture: h.Fixture) -> None:
    body = json.dumps(
        {
            "featureService": "driver_ranking",
            "entities": {
                "driver_id": {"values": [{"int64Value": "1001"}, {"int64Value": "9999"}]},
                "customer_id": {"values": [{"int64Value": "2001"}, {"int64Value": "8888"}]},
            },
        }
    )
    result = h.grpcurl(fixture.addr, "skewless.v1.OnlineService/GetOnlineFeatures", body=body)
    assert result.returncode == 0, result.stderr
    results = {r["name"]: r for r in json.loads(result.stdout)["results"]}
    assert list(results) == [
        "conv_rate",
        "acc_rate",
        "avg_daily_trips",
        "current_balance",
        "is_premium",
    ]
    trips = results["avg_daily_trips"]
    assert trips["values"][0] == {"int64_value": "42"}  # proto field names; int64 as a string
    assert trips["statuses"] == ["FEATURE_STATUS_PRESENT", "FEATURE_STATUS_NOT_FOUND"]
    assert trips["event_times"][0] == "2025-06-01T12:00:00.123456Z"
    assert results["is_premium"]["values"][0] == {"bool_value": True}


def test_errors_carry_code_and_details(fixture: h.Fixture) -> None:
    body = json.dumps(
        {
            "features": {"features": ["driver_stats:no_such_feature"]},
            "entities": {"driver_id": {"values": [{"int64Value": "1001"}]}},
        }
    )
    result = h.grpcurl(fixture.addr, "skewless.v1.OnlineService/GetOnlineFeatures", body=body)
    assert result.returncode == 64 + 5, result.stderr  # grpcurl exits 64 + the status code
    status = json.loads(result.stderr)
    assert status["code"] == 5  # NOT_FOUND
    info = next(d for d in status["details"] if d["@type"].endswith("google.rpc.ErrorInfo"))
    assert info["domain"] == "skewless.dev" and info["reason"]


# --- reflection v1 beside v1alpha ----------------------------------------------------------


def test_reflection_is_served_as_v1_and_v1alpha(fixture: h.Fixture) -> None:
    result = h.grpcurl(fixture.addr, "list")
    assert result.returncode == 0, result.stderr
    services = set(result.stdout.split())
    assert {
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    } <= services
    described = h.grpcurl(fixture.addr, "describe", "grpc.reflection.v1.ServerReflection")
    assert described.returncode == 0, described.stderr
    assert "grpc.reflection.v1.ServerReflection is a service" in described.stdout
    assert ".grpc.reflection.v1.ServerReflectionRequest" in described.stdout


@pytest.mark.parametrize("version", ["v1", "v1alpha"])
def test_each_reflection_version_answers_over_its_own_path(
    fixture: h.Fixture, version: str
) -> None:
    import grpc
    from google.protobuf import descriptor_pb2
    from grpc_reflection.v1alpha import reflection_pb2 as r

    with grpc.insecure_channel(fixture.addr) as channel:
        call = channel.stream_stream(
            f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo",
            request_serializer=r.ServerReflectionRequest.SerializeToString,
            response_deserializer=r.ServerReflectionResponse.FromString,
        )
        requests = [
            r.ServerReflectionRequest(list_services=""),
            r.ServerReflectionRequest(file_containing_symbol="skewless.v1.OnlineService"),
        ]
        listed, files = list(call(iter(requests), timeout=10))
    names = {s.name for s in listed.list_services_response.service}
    assert {"skewless.v1.OnlineService", f"grpc.reflection.{version}.ServerReflection"} <= names
    protos = [
        descriptor_pb2.FileDescriptorProto.FromString(b)
        for b in files.file_descriptor_response.file_descriptor_proto
    ]
    assert "skewless/v1/online_service.proto" in {p.name for p in protos}


def test_grpcurl_speaks_reflection_v1(tmp_path_factory: pytest.TempPathFactory) -> None:
    """grpcurl asks v1 first: against a server with only the v1 service it still lists."""
    from concurrent import futures

    import grpc
    from grpc_reflection.v1alpha import reflection, reflection_pb2

    from skewless.server.reflection import V1_SERVICE_NAME, ensure_v1_descriptor

    ensure_v1_descriptor()
    servicer = reflection.ReflectionServicer(("skewless.v1.OnlineService", V1_SERVICE_NAME))
    handler = grpc.method_handlers_generic_handler(
        V1_SERVICE_NAME,
        {
            "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
                servicer.ServerReflectionInfo,
                request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
                response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
            )
        },
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        result = h.grpcurl(f"127.0.0.1:{port}", "list")
        assert result.returncode == 0, result.stderr
        assert set(result.stdout.split()) == {"skewless.v1.OnlineService", V1_SERVICE_NAME}
        described = h.grpcurl(f"127.0.0.1:{port}", "describe", "skewless.v1.OnlineService")
        assert described.returncode == 0, described.stderr
        assert "rpc GetOnlineFeatures" in described.stdout
    finally:
        server.stop(0)
