"""The cross-language contract fixture shared by the Go, Java, grpcurl and Python legs.

It holds one small repository that mirrors `examples/rides` (same entities, views and
feature service, with TTLs long enough that the fixed event times below stay fresh):
the registry is saved with `RegistryStore`, the online rows are written straight into
Redis in the documented layout (`skewless.online.layout`), the offline history and the
entity rows of historical retrieval come from `contract_history`, and the real server
runs in a subprocess on a free port. `LOOKUPS` are the questions every client asks and
`canonical_*` turn an answer into the canonical JSON form described in docs/clients.md.

Run as a script (`python client_harness.py serve DATA_DIR REDIS_URL [CERT KEY [CA]]`)
it serves the fixture (over TLS, or mutual TLS with a client CA) and prints `PORT <n>`;
the tests use `serve_fixture` instead.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import redis
from google.protobuf import duration_pb2, json_format, timestamp_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from skewless.online.layout import redis_key
from skewless.registry.registry_store import RegistryStore
from skewless.v1 import online_service_pb2, online_service_pb2_grpc, registry_pb2, types_pb2

try:
    from .contract_history import seed_history
except ImportError:  # run as a script: `python client_harness.py serve ...`
    from contract_history import seed_history  # type: ignore[no-redef]

PROJECT = "rides"
ROOT = Path(__file__).resolve().parents[2]
GO_DIR = ROOT / "clients" / "go"
JAVA_DIR = ROOT / "clients" / "java"
GRPCURL = ROOT / ".tools" / "bin" / "grpcurl"
GRPC_JAVA_PLUGIN = "/usr/bin/grpc_java_plugin"  # Debian's protobuf-compiler-grpc-java-plugin

T1 = dt.datetime(2025, 6, 1, 12, 0, 0, 123456, tzinfo=dt.UTC)
T2 = dt.datetime(2025, 6, 1, 13, 30, tzinfo=dt.UTC)
T3 = dt.datetime(2025, 5, 31, 0, 0, 0, 1, tzinfo=dt.UTC)
STALE = dt.datetime(2001, 2, 3, 4, 5, 6, tzinfo=dt.UTC)
TTL_SECONDS = 20 * 365 * 86400  # fixed event times above stay within it until 2045

_T = types_pb2
NULL = object()  # a stored null


@dataclass(frozen=True)
class Lookup:
    """One question of the contract test.

    Attributes:
        name: The key of this answer in the canonical JSON.
        feature_service: A feature service name, or None for `features`.
        features: Feature references when `feature_service` is None.
        full_feature_names: Whether to ask for `view__feature` names.
        entities: Join key columns; values are ints, or strings for the wrong-type case.

    """

    name: str
    feature_service: str | None = None
    features: tuple[str, ...] = ()
    full_feature_names: bool = False
    entities: dict[str, list[Any]] = field(default_factory=dict)

    def request(self) -> online_service_pb2.GetOnlineFeaturesRequest:
        """Builds the request message with the generated Python stubs."""
        request = online_service_pb2.GetOnlineFeaturesRequest(
            full_feature_names=self.full_feature_names
        )
        if self.feature_service is not None:
            request.feature_service = self.feature_service
        else:
            request.features.features.extend(self.features)
        for key, values in self.entities.items():
            for value in values:
                if isinstance(value, str):
                    request.entities[key].values.add(string_value=value)
                else:
                    request.entities[key].values.add(int64_value=value)
        return request


#: The questions every client asks, in order (the Go and Java examples hard-code them too).
LOOKUPS: tuple[Lookup, ...] = (
    Lookup(
        "feature_service",
        feature_service="driver_ranking",
        entities={"driver_id": [1001, 1002, 1003, 9999], "customer_id": [2001, 2002, 8888, 2004]},
    ),
    Lookup(
        "feature_list",
        features=("driver_stats:conv_rate", "customer_profile:segment"),
        full_feature_names=True,
        entities={"driver_id": [1002, 1001], "customer_id": [2002, 2001]},
    ),
    Lookup(
        "unknown_feature",
        features=("driver_stats:no_such_feature",),
        entities={"driver_id": [1001]},
    ),
    Lookup("wrong_key_type", features=("driver_stats",), entities={"driver_id": ["1001"]}),
)


# --- the registry ------------------------------------------------------------------------


def _ttl() -> duration_pb2.Duration:
    return duration_pb2.Duration(seconds=TTL_SECONDS)


def build_registry() -> registry_pb2.Registry:
    """The fixture registry: `examples/rides` names and types, long TTLs."""
    int64 = _T.VALUE_TYPE_INT64
    reg = registry_pb2.Registry(project=PROJECT)
    for name, key in (("driver", "driver_id"), ("customer", "customer_id")):
        reg.entities.add(name=name, join_keys=[registry_pb2.JoinKey(name=key, value_type=int64)])
    for name in ("driver_stats_source", "customer_profile_source"):
        source = reg.data_sources.add(name=name, timestamp_field="event_timestamp")
        source.file.path = f"data/{name.removesuffix('_source')}.parquet"
        source.file.format = registry_pb2.FILE_FORMAT_PARQUET
    views = {
        "driver_stats": (
            "driver",
            [
                ("conv_rate", _T.VALUE_TYPE_FLOAT32),
                ("acc_rate", _T.VALUE_TYPE_FLOAT32),
                ("avg_daily_trips", int64),
            ],
        ),
        "customer_profile": (
            "customer",
            [
                ("current_balance", _T.VALUE_TYPE_FLOAT64),
                ("lifetime_trip_count", int64),
                ("segment", _T.VALUE_TYPE_STRING),
                ("is_premium", _T.VALUE_TYPE_BOOL),
            ],
        ),
    }
    for view, (entity, features) in views.items():
        reg.feature_views.add(
            name=view,
            entities=[entity],
            source=f"{view}_source",
            features=[registry_pb2.Feature(name=n, value_type=t) for n, t in features],
            ttl=_ttl(),
            online=True,
            offline=True,
        )
    service = reg.feature_services.add(name="driver_ranking")
    service.projections.add(feature_view="driver_stats")
    service.projections.add(
        feature_view="customer_profile", features=["current_balance", "is_premium"]
    )
    return reg


# --- the online rows -----------------------------------------------------------------------


def _value(value: Any) -> bytes:
    if value is NULL:
        return b""
    if isinstance(value, bool):
        return _T.Value(bool_value=value).SerializeToString()
    if isinstance(value, int):
        return _T.Value(int64_value=value).SerializeToString()
    if isinstance(value, str):
        return _T.Value(string_value=value).SerializeToString()
    raise TypeError(value)


def _micros(when: dt.datetime) -> bytes:
    delta = when - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return str(delta // dt.timedelta(microseconds=1)).encode()


def _f32(x: float) -> bytes:
    return _T.Value(float_value=x).SerializeToString()


def _f64(x: float) -> bytes:
    return _T.Value(double_value=x).SerializeToString()


#: (view, key, event time, {feature: serialized value}) rows written to Redis.
ONLINE_ROWS: tuple[tuple[str, int, dt.datetime, dict[str, bytes]], ...] = (
    (
        "driver_stats",
        1001,
        T1,
        {"conv_rate": _f32(0.85), "acc_rate": _f32(0.5), "avg_daily_trips": _value(42)},
    ),
    (
        "driver_stats",
        1002,
        T2,
        {"conv_rate": _value(NULL), "acc_rate": _f32(0.75), "avg_daily_trips": _value(7)},
    ),
    (
        "driver_stats",
        1003,
        STALE,
        {"conv_rate": _f32(0.1), "acc_rate": _f32(0.2), "avg_daily_trips": _value(3)},
    ),
    # driver 9999 has no row: NOT_FOUND.
    (
        "customer_profile",
        2001,
        T3,
        {
            "current_balance": _f64(12.5),
            "lifetime_trip_count": _value(130),
            "segment": _value("premium"),
            "is_premium": _value(True),
        },
    ),
    (
        "customer_profile",
        2002,
        T2,
        {
            "current_balance": _f64(0.1),
            "lifetime_trip_count": _value(2),
            "segment": _value("économie ✓"),
            "is_premium": _value(False),
        },
    ),
    (
        "customer_profile",
        2004,
        T1,
        {
            "current_balance": _f64(-3.25),
            "lifetime_trip_count": _value(0),
            "segment": _value("budget"),
            "is_premium": _value(NULL),
        },
    ),
    # customer 8888 has no row: NOT_FOUND.
)


def seed_online(redis_url: str) -> None:
    """Empties Redis, then writes `ONLINE_ROWS` in the online layout (a hash per view and key)."""
    client = redis.Redis.from_url(redis_url)
    try:
        client.flushall()
        pipe = client.pipeline()
        for view, key, when, values in ONLINE_ROWS:
            mapping: dict[bytes | str, bytes] = {b"_ts": _micros(when)}
            mapping.update(values)
            pipe.hset(redis_key(PROJECT, view, [key]), mapping=mapping)
        pipe.execute()
    finally:
        client.close()


# --- the server ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ClientTLS:
    """How clients reach a TLS fixture: the CA, and a client certificate for mutual TLS.

    Attributes:
        ca: PEM CA that signed the server's certificate.
        cert: PEM client certificate, or None (plain TLS).
        key: Its PKCS#8 private key, or None.
        token: A bearer token every client sends, or None.

    """

    ca: Path
    cert: Path | None = None
    key: Path | None = None
    token: str | None = None

    def credentials(self) -> grpc.ChannelCredentials:
        """Channel credentials for the generated Python stubs (with the token, if any)."""
        tls = grpc.ssl_channel_credentials(
            self.ca.read_bytes(),
            self.key.read_bytes() if self.key else None,
            self.cert.read_bytes() if self.cert else None,
        )
        if self.token is None:
            return tls
        return grpc.composite_channel_credentials(
            tls, grpc.access_token_call_credentials(self.token)
        )

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of `skewless.client.Client`."""
        kwargs: dict[str, Any] = {"root_certificates": self.ca.read_bytes(), "token": self.token}
        if self.cert is not None and self.key is not None:
            kwargs["client_cert"] = (self.cert.read_bytes(), self.key.read_bytes())
        return kwargs

    def flags(self, dashes: str) -> list[str]:
        """Command-line flags of the Go (`-`) and Java (`--`) examples and grpcurl (`-`)."""
        out = [f"{dashes}cacert", str(self.ca)]
        if self.cert is not None and self.key is not None:
            out += [f"{dashes}cert", str(self.cert), f"{dashes}key", str(self.key)]
        return out

    def token_flags(self, dashes: str) -> list[str]:
        """The `-token T` flag of the examples, when a token is set."""
        return [f"{dashes}token", self.token] if self.token else []

    def grpcurl_flags(self) -> list[str]:
        """grpcurl's TLS flags and the authorization header."""
        header = ["-H", f"authorization: Bearer {self.token}"] if self.token else []
        return [*self.flags("-"), *header]


@dataclass(frozen=True)
class Fixture:
    """A served fixture.

    Attributes:
        addr: `127.0.0.1:<port>` of the live server.
        data_dir: Its data folder (holds the registry).
        tls: How clients connect when the fixture serves TLS; None for plaintext.

    """

    addr: str
    data_dir: Path
    tls: ClientTLS | None = None

    def go_flags(self) -> list[str]:
        """Connection flags of the Go example (`-cacert`, `-cert`, `-key`, `-token`)."""
        return [] if self.tls is None else [*self.tls.flags("-"), *self.tls.token_flags("-")]

    def java_flags(self) -> list[str]:
        """Connection flags of the Java example (`--cacert`, ...)."""
        return [] if self.tls is None else [*self.tls.flags("--"), *self.tls.token_flags("--")]


@contextmanager
def serve_fixture(
    data_dir: Path,
    redis_url: str,
    *,
    server_tls: tuple[Path, ...] = (),
    client_tls: ClientTLS | None = None,
    jwt_auth: dict[str, str] | None = None,
    policies: tuple[Any, ...] = (),
) -> Iterator[Fixture]:
    """Saves the registry, seeds Redis and the offline history, runs the real server.

    Args:
        data_dir: The fixture's data folder.
        redis_url: The Redis to seed and serve from.
        server_tls: `(cert_file, key_file)` to serve TLS, plus a client CA file for
            mutual TLS; empty serves plaintext.
        client_tls: How the clients connect to the TLS port (required with `server_tls`).
        jwt_auth: `auth.mode: jwt` settings (`issuer`, `audience`, `jwks_file`): every
            call must carry a JWT, and `policies` decide what each subject may read.
        policies: `skewless.registry.Policy` objects saved with the registry.

    """
    data_dir.mkdir(parents=True, exist_ok=True)
    registry = build_registry()
    registry.policies.extend(p.to_proto() for p in policies)
    RegistryStore(data_dir / "registry.pb").save(registry)
    seed_online(redis_url)
    seed_history(data_dir, PROJECT)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if jwt_auth is not None:
        env[_AUTH_ENV] = json.dumps(jwt_auth)
    proc = subprocess.Popen(
        [sys.executable, __file__, "serve", str(data_dir), redis_url, *map(str, server_tls)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        line = proc.stdout.readline() if ready else ""
        if not line.startswith("PORT "):
            proc.kill()
            raise RuntimeError(f"server did not start (first line {line!r}); see stderr")
        addr = f"127.0.0.1:{int(line.split()[1])}"
        _wait_serving(addr, client_tls)
        yield Fixture(addr=addr, data_dir=data_dir, tls=client_tls)
    finally:
        from tests.helpers.processes import stop_process  # not at the top: run as a script too

        stop_process(proc)


def _channel(addr: str, tls: ClientTLS | None) -> grpc.Channel:
    if tls is None:
        return grpc.insecure_channel(addr)
    return grpc.secure_channel(addr, tls.credentials())


def _wait_serving(addr: str, tls: ClientTLS | None = None, timeout: float = 15.0) -> None:
    with _channel(addr, tls) as channel:
        grpc.channel_ready_future(channel).result(timeout=timeout)


_AUTH_ENV = "SKEWLESS_HARNESS_JWT_AUTH"


async def _serve(data_dir: Path, redis_url: str, tls_files: list[str]) -> None:
    from skewless.core.auth_config import AuthConfig, JWTSettings
    from skewless.core.config import RepoConfig, ServerTLS
    from skewless.server.app import create_server

    auth = AuthConfig()
    if os.environ.get(_AUTH_ENV):
        settings = json.loads(os.environ[_AUTH_ENV])
        auth = AuthConfig(
            mode="jwt",
            jwt=JWTSettings(
                issuer=settings["issuer"],
                audience=settings["audience"],
                jwks_file=Path(settings["jwks_file"]),
            ),
        )

    server_tls = None
    if tls_files:
        cert, key, *client_ca = map(Path, tls_files)
        server_tls = ServerTLS(cert, key, client_ca[0] if client_ca else None)
    config = RepoConfig(
        root=data_dir,
        project=PROJECT,
        data_dir=data_dir,
        redis_url=redis_url,
        server_port=0,
        metrics_port=0,
        server_tls=server_tls,
        auth=auth,
    )
    server, port = create_server(config)
    await server.start()
    print(f"PORT {port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await server.stop(grace=1.0)


# --- the canonical form ----------------------------------------------------------------------


def canonical_time(ts: timestamp_pb2.Timestamp) -> str | None:
    """RFC 3339 in UTC with six fractional digits; an unset timestamp is None."""
    if ts.seconds == 0 and ts.nanos == 0:
        return None
    when = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(
        seconds=ts.seconds, microseconds=ts.nanos // 1000
    )
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical_value(value: types_pb2.Value) -> Any:
    """A `Value` as JSON: null, number, string, bool, base64 bytes, time, or a list."""
    kind = value.WhichOneof("kind")
    if kind is None or kind == "null_value":
        return None
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    if kind == "timestamp_value":
        return canonical_time(value.timestamp_value)
    if kind == "bytes_list_value":
        return [base64.b64encode(b).decode() for b in value.bytes_list_value.values]
    if kind == "timestamp_list_value":
        return [canonical_time(t) for t in value.timestamp_list_value.values]
    if kind.endswith("_list_value"):
        return list(getattr(value, kind).values)
    return getattr(value, kind)


def canonical_results(response: online_service_pb2.GetOnlineFeaturesResponse) -> list[Any]:
    """Every feature vector of a response: name, values, statuses, event times."""
    return [
        {
            "name": vector.name,
            "values": [canonical_value(v) for v in vector.values],
            "statuses": [_T.FeatureStatus.Name(s) for s in vector.statuses],
            "event_times": [canonical_time(t) for t in vector.event_times],
        }
        for vector in response.results
    ]


def canonical_error(status: status_pb2.Status) -> dict[str, Any]:
    """A failed call: status code name, ErrorInfo reason, message, BadRequest fields."""
    reason = ""
    fields: list[str] = []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason = info.reason
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields.extend(v.field for v in bad.field_violations)
    return {
        "code": code_pb2.Code.Name(status.code),
        "reason": reason,
        "message": status.message,
        "fields": fields,
    }


def python_stub_answers(addr: str, tls: ClientTLS | None = None) -> dict[str, Any]:
    """Asks `LOOKUPS` through the generated Python stub; returns the canonical form."""
    out = []
    with _channel(addr, tls) as channel:
        stub = online_service_pb2_grpc.OnlineServiceStub(channel)
        for lookup in LOOKUPS:
            try:
                response = stub.GetOnlineFeatures(lookup.request(), timeout=10)
            except grpc.RpcError as exc:
                status = rpc_status.from_call(exc)  # type: ignore[arg-type]
                if status is None:
                    status = status_pb2.Status(code=exc.code().value[0], message=exc.details())
                out.append({"name": lookup.name, "error": canonical_error(status)})
            else:
                out.append({"name": lookup.name, "results": canonical_results(response)})
    return {"lookups": out}


def _python_value(value: Any) -> Any:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if isinstance(value, list):
        return [_python_value(v) for v in value]
    return value


def canonical_client_error(exc: Any) -> dict[str, Any]:
    """A `skewless.client.SkewlessClientError` in the canonical error form."""
    assert exc.code is not None
    return {
        "code": exc.code.name,
        "reason": exc.reason,
        "message": exc.message,
        "fields": [v.field for v in exc.field_violations],
    }


def python_client_answers(addr: str, tls: ClientTLS | None = None) -> dict[str, Any]:
    """Asks `LOOKUPS` through the Python client (`skewless.client.Client`)."""
    from skewless.client import Client, SkewlessClientError

    out = []
    with Client(addr, timeout=10, **(tls.client_kwargs() if tls else {})) as client:
        for lookup in LOOKUPS:
            try:
                result = client.get_online_features(
                    lookup.entities,
                    feature_service=lookup.feature_service,
                    features=None if lookup.feature_service is not None else lookup.features,
                    full_feature_names=lookup.full_feature_names,
                )
            except SkewlessClientError as exc:
                out.append({"name": lookup.name, "error": canonical_client_error(exc)})
                continue
            results = [
                {
                    "name": column.name,
                    "values": [_python_value(v) for v in column.values],
                    "statuses": [f"FEATURE_STATUS_{s}" for s in column.statuses],
                    "event_times": [_python_value(t) for t in column.event_times],
                }
                for column in result.features
            ]
            out.append({"name": lookup.name, "results": results})
    return {"lookups": out}


def grpcurl(
    addr: str,
    *args: str,
    body: str | None = None,
    tls: ClientTLS | None = None,
    max_time: float = 10,
) -> subprocess.CompletedProcess[str]:
    """Runs grpcurl against `addr` (reflection, no proto files), plaintext unless `tls`."""
    security = ["-plaintext"] if tls is None else tls.grpcurl_flags()
    command = [str(GRPCURL), *security, "-format-error", "-max-time", str(max_time)]
    if body is not None:
        command += ["-d", body]
    return subprocess.run(
        [*command, addr, *args], capture_output=True, text=True, encoding="utf-8", timeout=30
    )


def grpcurl_answers(addr: str, tls: ClientTLS | None = None) -> dict[str, Any]:
    """Asks `LOOKUPS` with grpcurl and JSON bodies; returns the canonical form."""
    out = []
    for lookup in LOOKUPS:
        body = json_format.MessageToJson(lookup.request())
        method = "skewless.v1.OnlineService/GetOnlineFeatures"
        result = grpcurl(addr, method, body=body, tls=tls)
        if result.returncode == 0:
            response = json_format.Parse(
                result.stdout, online_service_pb2.GetOnlineFeaturesResponse()
            )
            out.append({"name": lookup.name, "results": canonical_results(response)})
        else:
            # `-format-error` prints the google.rpc.Status as JSON on stderr.
            status = json_format.Parse(result.stderr, status_pb2.Status())
            out.append({"name": lookup.name, "error": canonical_error(status)})
    return {"lookups": out}


# --- toolchains ----------------------------------------------------------------------------


def go_binary() -> str | None:
    """The `go` toolchain on PATH (or in /usr/local/go/bin), None when absent."""
    return shutil.which("go") or shutil.which("go", path="/usr/local/go/bin")


def mvn_binary() -> str | None:
    """The `mvn` launcher on PATH, None when absent."""
    return shutil.which("mvn")


def surefire_counts(suite: str) -> dict[str, int]:
    """Tests, failures, errors and skipped of one JUnit class's last Surefire report."""
    report = JAVA_DIR / "target" / "surefire-reports" / f"TEST-dev.skewless.client.{suite}.xml"
    head = report.read_text()[:2000]
    counts = {}
    for key in ("tests", "failures", "errors", "skipped"):
        match = re.search(rf'\b{key}="(\d+)"', head)
        assert match is not None, f"{report}: no {key} count"
        counts[key] = int(match.group(1))
    return counts


def java_classpath() -> str:
    """Builds the Java client once (`mvn package`, tests skipped) and returns its classpath."""
    mvn = mvn_binary()
    assert mvn is not None
    assert Path(GRPC_JAVA_PLUGIN).exists(), (
        f"{GRPC_JAVA_PLUGIN} is missing: apt-get install protobuf-compiler-grpc-java-plugin "
        "(make system-deps); the Java build generates its gRPC stubs with it"
    )
    subprocess.run(
        [mvn, "-q", "-B", "-DskipTests", "compile"],
        cwd=JAVA_DIR,
        check=True,
        timeout=900,
    )
    deps = (JAVA_DIR / "target" / "classpath.txt").read_text().strip()
    return f"{JAVA_DIR / 'target' / 'classes'}{os.pathsep}{deps}"


if __name__ == "__main__":
    if len(sys.argv) not in (4, 6, 7) or sys.argv[1] != "serve":
        sys.exit("usage: client_harness.py serve DATA_DIR REDIS_URL [CERT KEY [CLIENT_CA]]")
    asyncio.run(_serve(Path(sys.argv[2]), sys.argv[3], sys.argv[4:]))
