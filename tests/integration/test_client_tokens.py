"""Every client sends `authorization: Bearer <token>`, checked where it arrives.

A small gRPC server on loopback (TLS with a certificate made for the run, or
plaintext) records the method and the authorization header of every call it gets,
answers GetOnlineFeatures with an empty response and every other method with
UNIMPLEMENTED. The Python client is checked on every kind of call (unary, paged,
the historical stream) with a token callable that must be asked once per call; the
Go and Java examples and grpcurl with a static token over TLS. (The refresh of Go's
WithTokenSource and Java's token supplier is tested in their own test suites.)
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import threading
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from pathlib import Path

import grpc
import pyarrow as pa
import pytest

from skewless.client import Client, SkewlessClientError, UnavailableError
from skewless.v1 import registry_service_pb2, registry_service_pb2_grpc

from . import client_harness as h
from .certs import TLSFiles, make_tls_files

ONLINE = "/skewless.v1.OnlineService/GetOnlineFeatures"
REGISTRY_INFO = "/skewless.v1.RegistryService/GetRegistryInfo"
LIST_VIEWS = "/skewless.v1.RegistryService/ListFeatureViews"
HISTORICAL = "/skewless.v1.HistoricalService/GetHistoricalFeatures"


class HeaderRecorder(grpc.GenericRpcHandler):  # type: ignore[misc]
    """Records (method, authorization header, other headers) of each call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str | None]] = []
        self.extra: list[dict[str, str]] = []
        self._lock = threading.Lock()

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        headers = dict(details.invocation_metadata)
        with self._lock:
            self.calls.append((details.method, headers.get("authorization")))
            self.extra.append(headers)
        if details.method == ONLINE:  # raw bytes in and out: b"" is an empty response
            return grpc.unary_unary_rpc_method_handler(lambda request, context: b"")
        return None  # UNIMPLEMENTED, after the header was seen

    def take(self) -> list[tuple[str, str | None]]:
        with self._lock:
            calls, self.calls = self.calls, []
        return calls


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    return make_tls_files(tmp_path_factory.mktemp("token-certs"))


Recording = tuple[HeaderRecorder, str, h.ClientTLS | None]


@contextmanager
def _recording_server(certs: TLSFiles | None) -> Iterator[Recording]:
    """The recording server (TLS with `certs`); yields it, its address and its client TLS."""
    handler = HeaderRecorder()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((handler,))
    tls: h.ClientTLS | None = None
    if certs is not None:
        pair = [(certs.read("server_key"), certs.read("server_cert"))]
        port = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials(pair))
        tls = h.ClientTLS(ca=certs.ca, token="other-language-token")
    else:
        port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield handler, f"127.0.0.1:{port}", tls
    finally:
        server.stop(0)


@pytest.fixture(scope="module", params=["tls", "plaintext"])
def recorder(request: pytest.FixtureRequest, certs: TLSFiles) -> Iterator[Recording]:
    """The recording server over TLS, then over plaintext."""
    with _recording_server(certs if request.param == "tls" else None) as recording:
        recording[0].take()
        yield recording


@pytest.fixture
def tls_recorder(certs: TLSFiles) -> Iterator[tuple[HeaderRecorder, str, h.ClientTLS]]:
    """A recording server over TLS, and a client TLS carrying a token."""
    with _recording_server(certs) as (handler, target, tls):
        assert tls is not None
        yield handler, target, tls


def _client(target: str, tls: h.ClientTLS | None, **kwargs: object) -> Client:
    """A Python client of the recorder; its token comes from `kwargs`."""
    security = {"root_certificates": tls.ca.read_bytes()} if tls is not None else {}
    return Client(target, timeout=5, **security, **kwargs)  # type: ignore[arg-type]


def test_python_client_asks_the_token_callable_for_every_call(recorder: Recording) -> None:
    handler, target, tls = recorder
    handler.take()
    counter = itertools.count(1)
    with _client(target, tls, token=lambda: f"token-{next(counter)}") as client:
        client.get_online_features({"driver_id": [1]}, features=["driver_stats:conv_rate"])
        with pytest.raises(SkewlessClientError):
            client.get_registry_info()
        with pytest.raises(SkewlessClientError):
            client.list_feature_views()
        rows = pa.table({"driver_id": [1], "event_timestamp": pa.array([0], pa.timestamp("us"))})
        with pytest.raises(SkewlessClientError):
            client.get_historical_features(rows, feature_service="driver_ranking")
    assert handler.take() == [
        (ONLINE, "Bearer token-1"),
        (REGISTRY_INFO, "Bearer token-2"),
        (LIST_VIEWS, "Bearer token-3"),
        (HISTORICAL, "Bearer token-4"),
    ]


def test_python_client_keeps_its_other_headers_and_refuses_two_authorizations(
    recorder: Recording,
) -> None:
    handler, target, tls = recorder
    handler.take()
    with _client(target, tls, token="static", metadata=[("x-team", "ranking")]) as client:
        client.get_online_features({"driver_id": [1]}, features=["driver_stats:conv_rate"])
    assert handler.take() == [(ONLINE, "Bearer static")]
    assert handler.extra[-1]["x-team"] == "ranking"
    with pytest.raises(ValueError, match="token"):
        _client(target, tls, token="a", metadata=[("Authorization", "Bearer b")])


def test_a_failing_token_callable_fails_the_call_before_it_is_sent(recorder: Recording) -> None:
    handler, target, tls = recorder
    handler.take()

    def broken() -> str:
        raise RuntimeError("token service down")

    with _client(target, tls, token=broken) as client, pytest.raises(UnavailableError) as err:
        client.get_online_features({"driver_id": [1]}, features=["driver_stats:conv_rate"])
    assert "token service down" in err.value.message
    assert handler.take() == []


def test_stubs_on_the_client_channel_carry_the_token_over_tls(
    tls_recorder: tuple[HeaderRecorder, str, h.ClientTLS],
) -> None:
    handler, target, tls = tls_recorder
    with _client(target, tls, token="for-every-stub") as client:
        stub = registry_service_pb2_grpc.RegistryServiceStub(client.channel)
        with pytest.raises(grpc.RpcError):
            stub.GetRegistryInfo(registry_service_pb2.GetRegistryInfoRequest(), timeout=5)
    assert handler.take() == [(REGISTRY_INFO, "Bearer for-every-stub")]


@pytest.mark.skipif(h.go_binary() is None, reason="the go toolchain is not installed")
def test_go_example_sends_the_token(
    tls_recorder: tuple[HeaderRecorder, str, h.ClientTLS], tmp_path: Path
) -> None:
    go = h.go_binary()
    assert go is not None
    handler, target, tls = tls_recorder
    binary = tmp_path / "example"
    env = {**os.environ, "GOFLAGS": "-buildvcs=false", "GOTOOLCHAIN": "local"}
    subprocess.run(
        [go, "build", "-o", str(binary), "./cmd/example"], cwd=h.GO_DIR, env=env, check=True
    )
    flags = [*tls.flags("-"), *tls.token_flags("-")]
    result = subprocess.run(
        [str(binary), "-addr", target, *flags], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)["lookups"]) == len(h.LOOKUPS)
    assert handler.take() == [(ONLINE, "Bearer other-language-token")] * len(h.LOOKUPS)


@pytest.mark.skipif(h.mvn_binary() is None, reason="Maven (mvn) is not installed")
def test_java_example_sends_the_token(
    tls_recorder: tuple[HeaderRecorder, str, h.ClientTLS],
) -> None:
    handler, target, tls = tls_recorder
    classpath = h.java_classpath()
    flags = [*tls.flags("--"), *tls.token_flags("--")]
    result = subprocess.run(
        ["java", "-cp", classpath, "dev.skewless.client.example.Example", "--addr", target, *flags],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert handler.take() == [(ONLINE, "Bearer other-language-token")] * len(h.LOOKUPS)


@pytest.mark.skipif(not h.GRPCURL.exists(), reason="grpcurl is not installed (run `make tools`)")
def test_grpcurl_sends_the_documented_header(
    tls_recorder: tuple[HeaderRecorder, str, h.ClientTLS],
) -> None:
    handler, target, tls = tls_recorder
    # The recorder has no reflection service: grpcurl reads the protos instead.
    body = json.dumps({"features": {"features": ["driver_stats:conv_rate"]}})
    result = subprocess.run(
        [
            str(h.GRPCURL),
            *tls.grpcurl_flags(),
            "-import-path",
            str(h.ROOT / "protos"),
            "-proto",
            "skewless/v1/online_service.proto",
            "-d",
            body,
            target,
            "skewless.v1.OnlineService/GetOnlineFeatures",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert handler.take() == [(ONLINE, "Bearer other-language-token")]
