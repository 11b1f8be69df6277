"""Online serving benchmark: skewless (1 and 2 workers) against an ideal minimal server.

Starts its own redis-server, loads the issue's request shapes (driver: 10 features,
customer: 5 features, wide: 250 int64 features), then for each server and each request
shape drives load (ghz, or the lighter `--loadgen raw`) at concurrency 1, 8 and 32 and
prints QPS, p50/p99/p99.9 (medians of `--repeat` interleaved runs) and the ratios to
the ideal server.

The workload (registry, values, requests) comes from `bench/workload.py`. The ideal
server is a bare `grpc.aio` handler doing the same pipelined HMGETs the way skewless does
(pre-encoded RESP on a pooled socket, hiredis parsing) and returning the stored bytes
concatenated, unframed, inside one `FeatureVector` (no skewless code but a varint
encoder). `skewless-Nraw` is the server as `skewless.server.app` registers it
(pre-serialized responses); `skewless-N` registers, from this file, the generated
servicer with a typed `GetOnlineFeatures` that parses those bytes back into a message for
grpc to serialize again (what a servicer that builds messages pays).

All servers stay up and are measured back to back for each shape and concurrency (so
load drift hits them alike); the load generator runs on the same machine and its CPU
use is reported, to show whether it is the bottleneck (ghz is, on wide responses: it
decodes them).

Usage:
    .venv/bin/python bench/online.py [--loadgen ghz|raw] [--duration 3] [--repeat 3]
        [--entities 10000] [--wide-entities 2000] [--shapes a,b,c,d] [--concurrency 1,8,32]

`--loadgen raw` drives the load with the pass-through Go client in `bench/loadgen/`
(built with `go build` when its sources change), which uses far less CPU than ghz on wide
responses.

A kind ending in `-asyncio` (`skewless-1raw-asyncio`) serves on asyncio's event loop
instead of the default uvloop (`server.event_loop`). `--baseline DIR` names a checkout of
another commit with its own `.venv`; the `base-N` kinds (`base-1raw`, `base-2raw`) run its
server, so that a change is measured before and after in one run.

`--servers ...,skewless-1tls,skewless-1jwt` adds the cost of security: `skewless-1tls`
serves TLS (certificates made for the run with trustme), `skewless-1jwt` TLS with
`auth.mode: jwt` (an RSA key and JWKS made for the run, one RS256 token sent on every
call, and a policy granting `read_online`); both compare with `skewless-1raw`
(plaintext, no auth) in a last table. They need `--loadgen raw`.

Needs ghz: GOBIN=$PWD/.tools/bin go install github.com/bojand/ghz/cmd/ghz@v0.120.0
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
from google.protobuf import descriptor_pb2, json_format
from workload import (
    PROJECT,
    SERVICES,
    copy_feast_repo,
    load_online,
    online_registry,
    online_request,
)

from skewless.client._wire import encode_varint
from skewless.core.auth_config import AuthConfig, JWTSettings
from skewless.core.config import RepoConfig, ServerTLS
from skewless.online.embedded_redis import EmbeddedRedis, free_port
from skewless.online.layout import view_key_prefix
from skewless.registry.registry_store import RegistryStore
from skewless.server.services.online import OnlineServicer
from skewless.server.workers import serve_workers
from skewless.v1 import online_service_pb2, policy_pb2

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
GHZ = os.environ.get("GHZ", str(ROOT / ".tools" / "bin" / "ghz"))

# --- ghz's descriptors ---------------------------------------------------------------------


def write_protoset(path: Path) -> None:
    files: dict[str, descriptor_pb2.FileDescriptorProto] = {}

    def add(fd: object) -> None:
        for dep in fd.dependencies:  # type: ignore[attr-defined]
            add(dep)
        if fd.name not in files:  # type: ignore[attr-defined]
            proto = descriptor_pb2.FileDescriptorProto()
            fd.CopyToProto(proto)  # type: ignore[attr-defined]
            files[fd.name] = proto  # type: ignore[attr-defined]

    add(online_service_pb2.DESCRIPTOR)
    path.write_bytes(
        descriptor_pb2.FileDescriptorSet(file=list(files.values())).SerializeToString()
    )


# --- the ideal server ----------------------------------------------------------------------


_LEN = 2  # the wire type of length-delimited fields
_RESULTS = online_service_pb2.GetOnlineFeaturesResponse.DESCRIPTOR.fields_by_name["results"]
#: The tag of the response's `results` (one `FeatureVector` per call here).
RESULTS_TAG = encode_varint(_RESULTS.number << 3 | _LEN)
#: The tag of a field that `FeatureVector` does not declare: any client skips it.
_BLOB_FIELD = 15
assert _BLOB_FIELD not in _RESULTS.message_type.fields_by_number
BLOB_TAG = encode_varint(_BLOB_FIELD << 3 | _LEN)


async def ideal_server(port: int, url: str) -> None:
    """A bare grpc.aio handler: parse, one pipelined HMGET round trip, return the bytes.

    It talks to Redis the fastest way we know in Python, as skewless does: pre-encoded
    RESP written in one call on a pooled socket, replies parsed by hiredis.
    """
    import hiredis

    host, port_str = url.removeprefix("redis://").split("/")[0].split(":")
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, hiredis.Reader]] = []
    plans = {
        name: [
            (
                view_key_prefix(PROJECT, view),
                key,
                b"*%d\r\n$5\r\nHMGET\r\n" % (len(feats) + 3),
                b"$3\r\n_ts\r\n" + b"".join(b"$%d\r\n%s\r\n" % (len(f), f.encode()) for f in feats),
            )
            for view, key, feats in spec
        ]
        for name, spec in SERVICES.items()
    }
    parse = online_service_pb2.GetOnlineFeaturesRequest.FromString

    async def handler(data: bytes, context: grpc.aio.ServicerContext) -> bytes:
        request = parse(data)
        parts = []
        for prefix, key, head, fields in plans[request.feature_service]:
            for v in request.entities[key].values:
                k = prefix + b"{" + str(v.int64_value).encode() + b"}"
                parts.append(b"%s$%d\r\n%s\r\n%s" % (head, len(k), k, fields))
        if idle:
            reader, writer, parser = idle.pop()
        else:
            reader, writer = await asyncio.open_connection(host, int(port_str))
            parser = hiredis.Reader()
        writer.write(b"".join(parts))
        rows = []
        while len(rows) < len(parts):
            reply = parser.gets()
            if reply is False:
                parser.feed(await reader.read(1 << 17))
            else:
                rows.append(reply)
        idle.append((reader, writer, parser))
        # The stored bytes as they are, in one unknown field of one FeatureVector: a
        # valid response for any client, and no per-value work at all.
        blob = b"".join([x for row in rows for x in row[1:] if x])
        inner = BLOB_TAG + encode_varint(len(blob)) + blob
        return RESULTS_TAG + encode_varint(len(inner)) + inner

    server = grpc.aio.server(options=[("grpc.so_reuseport", 1)])
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "skewless.v1.OnlineService",
                {"GetOnlineFeatures": grpc.unary_unary_rpc_method_handler(handler)},
            ),
        )
    )
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


def serve_skewless(root: str, url: str, port: int, n: int) -> None:
    security = os.environ.get(_SECURITY_ENV, "")
    loop = os.environ.get(_LOOP_ENV)
    config = RepoConfig(
        **({"event_loop": loop} if loop else {}),
        root=Path(root),
        project=PROJECT,
        data_dir=Path(root) / "data",
        redis_url=url,
        server_port=port,
        metrics_port=0,
        server_tls=ServerTLS(Path(root) / "server.pem", Path(root) / "server.key")
        if security
        else None,
        auth=AuthConfig(
            mode="jwt",
            jwt=JWTSettings(issuer=_ISSUER, audience=_AUDIENCE, jwks_file=Path(root) / "jwks.json"),
        )
        if security == "jwt"
        else AuthConfig(),
    )
    sys.exit(serve_workers(config, n))


# --- the cost of security: TLS, and TLS + JWT ---------------------------------------------

_SECURITY_ENV = "SKEWLESS_BENCH_SECURITY"
_LOOP_ENV = "SKEWLESS_BENCH_EVENT_LOOP"
_ISSUER = "https://issuer.bench.skewless/"
_AUDIENCE = "skewless-bench"
_SUBJECT = "bench-client"


def security_of(kind: str) -> str:
    """`tls`, `jwt` or '' for a server kind (`skewless-1tls`, `skewless-1jwt`)."""
    for suffix in ("tls", "jwt"):
        if kind.startswith("skewless-") and kind.endswith(suffix):
            return suffix
    return ""


def write_security_files(root: Path) -> str:
    """Certificates, a JWKS and a token under `root`; returns the token."""
    import jwt
    import trustme
    from cryptography.hazmat.primitives.asymmetric import rsa

    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(root / "ca.pem"))
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    leaf.private_key_pem.write_to_path(str(root / "server.key"))
    (root / "server.pem").write_bytes(b"".join(b.bytes() for b in leaf.cert_chain_pems))
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    public.update(kid="bench", alg="RS256", use="sig")
    (root / "jwks.json").write_text(json.dumps({"keys": [public]}))
    now = int(time.time())
    claims = {"iss": _ISSUER, "aud": _AUDIENCE, "sub": _SUBJECT, "iat": now, "exp": now + 86400}
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": "bench"})


def bench_policy() -> policy_pb2.Policy:
    """`read_online` on the project for the bench's JWT subject."""
    return policy_pb2.Policy(
        name="bench",
        subjects=[_SUBJECT],
        actions=[policy_pb2.POLICY_ACTION_READ_ONLINE],
        resources=[policy_pb2.ResourcePattern(type=policy_pb2.RESOURCE_TYPE_PROJECT)],
    )


def typed_handlers(servicer: OnlineServicer) -> dict:
    """OnlineService's handlers with a typed `GetOnlineFeatures`, returning a message.

    It parses the raw-bytes handler's serialized response back into a
    `GetOnlineFeaturesResponse`, which the server's boundary serializes again: the same
    answer on the wire, at the cost of a servicer that builds messages.
    """
    handlers = _RAW_HANDLERS(servicer)
    raw = handlers["GetOnlineFeatures"]
    parse = online_service_pb2.GetOnlineFeaturesResponse.FromString

    async def typed(request, context):
        return parse(await raw(request, context))

    logging.getLogger(__name__).info("OnlineService registered with a typed GetOnlineFeatures")
    return {**handlers, "GetOnlineFeatures": typed}


_RAW_HANDLERS = OnlineServicer.handlers
if "--typed-registration" in sys.argv:
    # Runs in the `--serve` process and, through multiprocessing's spawn (which re-imports
    # this file), in every worker before it builds its server: the server registers
    # OnlineService with the typed handler above instead of its own raw one.
    OnlineServicer.handlers = typed_handlers


#: A checkout of another commit with its own `.venv` (`--baseline`), whose server the
#: `base-N...` kinds run: before and after a change, measured in one run.
BASELINE: Path | None = None


def start_server(kind: str, root: Path, url: str, port: int) -> subprocess.Popen[bytes]:
    if kind == "ideal":
        args = [sys.executable, __file__, "--ideal-server", str(port), "--redis-url", url]
    elif kind.startswith("base-"):
        if BASELINE is None:
            raise SystemExit(f"{kind} needs --baseline DIR (a checkout with its .venv)")
        n = kind.split("-")[1].removesuffix("raw")
        python = BASELINE / ".venv" / "bin" / "python"
        args = [str(python), str(BASELINE / "bench" / "online.py"), "--serve", str(root), url]
        args += [str(port), n]
    else:
        security = security_of(kind)
        plain = kind.removesuffix("-asyncio")
        n = plain.split("-")[1].removesuffix("raw").removesuffix(security)
        args = [sys.executable, __file__, "--serve", str(root), url, str(port), n]
        if not plain.endswith("raw") and not security:
            args.append("--typed-registration")
    env = {**os.environ, _SECURITY_ENV: security_of(kind)}
    if kind.endswith("-asyncio"):  # server.event_loop: asyncio instead of uvloop
        env[_LOOP_ENV] = "asyncio"
    log = root / f"{kind}.log"
    with log.open("wb") as stderr:
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=stderr, env=env)
    deadline = time.monotonic() + 30
    while True:
        try:
            channel = (
                grpc.secure_channel(
                    f"127.0.0.1:{port}",
                    grpc.ssl_channel_credentials((root / "ca.pem").read_bytes()),
                )
                if security_of(kind)
                else grpc.insecure_channel(f"127.0.0.1:{port}")
            )
            grpc.channel_ready_future(channel).result(timeout=1)
            channel.close()
            break
        except grpc.FutureTimeoutError:
            if time.monotonic() > deadline or proc.poll() is not None:
                tail = log.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{kind} server did not start:\n{tail}") from None
    time.sleep(1.0 if kind.split("-")[-1].startswith("2") else 0.3)  # let every worker bind
    return proc


# --- load ----------------------------------------------------------------------------------


def ghz(port: int, protoset: Path, data: Path, concurrency: int, duration: float) -> dict:
    args = [
        GHZ,
        "--insecure",
        "--protoset", str(protoset),
        "--call", "skewless.v1.OnlineService.GetOnlineFeatures",
        "--binary-file", str(data),  # pre-serialized: no JSON work per call in ghz
        "-c", str(concurrency),
        "--connections", str(min(concurrency, 8)),
        "-z", f"{duration}s",
        "--format", "json",
        f"127.0.0.1:{port}",
    ]  # fmt: skip
    started, cpu_before = time.monotonic(), _children_cpu()
    proc = subprocess.run(args, capture_output=True, check=False)
    out, err = proc.stdout, proc.stderr
    wall = time.monotonic() - started
    ghz_cpu = (_children_cpu() - cpu_before) / wall  # ghz is the only child reaped meanwhile
    report = json.loads(out or b"{}")
    if not report:
        raise RuntimeError(err.decode())
    lat = sorted(d["latency"] for d in report.get("details") or [] if not d.get("error"))

    def pct(p: float) -> float:
        return lat[min(len(lat) - 1, int(p * len(lat)))] / 1e6 if lat else float("nan")

    codes = report.get("statusCodeDistribution") or {}
    # ghz cancels the calls in flight when the duration ends: those are not errors
    errors = sum(v for k, v in codes.items() if k not in ("OK", "Canceled"))
    return {
        "qps": report.get("rps", 0.0),
        "p50": pct(0.50),
        "p99": pct(0.99),
        "p999": pct(0.999),
        "errors": errors,
        "ghz_cpu": ghz_cpu,
        "requests": len(lat),
    }


# --- the raw load generator ---------------------------------------------------------------

# ghz builds and decodes dynamic messages, which costs it most of a core on wide responses.
# bench/loadgen/ sends pre-serialized bytes and never decodes the answer, so that the load
# generator's CPU stays small; it is built into .tools/bin with `go build`, with the module
# versions pinned by its go.mod and go.sum, again whenever one of its files is newer.
LOADGEN_SRC = HERE / "loadgen"
LOADGEN = ROOT / ".tools" / "bin" / "skewless-loadgen"


def build_loadgen() -> Path:
    sources = [p for p in LOADGEN_SRC.iterdir() if p.is_file()]
    newest = max(p.stat().st_mtime for p in sources)
    if LOADGEN.exists() and LOADGEN.stat().st_mtime >= newest:
        return LOADGEN
    subprocess.run(
        ["go", "build", "-mod=readonly", "-buildvcs=false", "-o", str(LOADGEN), "."],
        cwd=LOADGEN_SRC,
        check=True,
    )
    return LOADGEN


def raw_load(
    port: int, data: Path, concurrency: int, duration: float, extra: tuple[str, ...] = ()
) -> dict:
    started, cpu_before = time.monotonic(), _children_cpu()
    proc = subprocess.run(
        [
            str(LOADGEN),
            "-addr",
            f"127.0.0.1:{port}",
            "-data",
            str(data),
            "-c",
            str(concurrency),
            "-conns",
            str(min(concurrency, 8)),
            "-d",
            f"{duration}s",
            *extra,
        ],
        capture_output=True,
        check=True,
    )
    wall = time.monotonic() - started
    report = json.loads(proc.stdout)
    return {
        "qps": report["qps"],
        "p50": report["p50"],
        "p99": report["p99"],
        "p999": report["p999"],
        "errors": sum(report["errors"].values()),
        "ghz_cpu": (_children_cpu() - cpu_before) / wall,
        "requests": report["count"],
    }


# --- Feast's feature server ------------------------------------------------------------

# Feast 0.67 from its own venv (see bench/README.md): the repo bench/feast/online over
# Parquet copies of the very values loaded above, materialized by `feast materialize` into
# a second Redis (Feast's own key layout), served by `feast serve` (HTTP, gunicorn +
# uvicorn workers) and driven by wrk (compiled C, `apt-get install wrk`) with the JSON
# body in a Lua script.
FEAST_PYTHON = HERE / ".venv-feast" / "bin" / "python"
WRK = os.environ.get("WRK", shutil.which("wrk") or "/usr/bin/wrk")

FEAST_KEYS = {"driver_hourly": "driver_id", "customer_profile": "customer_id", "wide": "item_id"}


def feast_setup(python: Path, repo: Path, redis_url: str, ts_us: int, collect: dict) -> float:
    """Copies bench/feast/online, writes its Parquet, `feast apply`, `feast materialize`; secs."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    feast = str(python.parent / "feast")
    host_port = redis_url.removeprefix("redis://").split("/")[0]
    copy_feast_repo("online", repo, redis=host_port)
    for view, columns in collect.items():
        n = len(columns["id"])
        table = pa.table(
            {
                FEAST_KEYS[view]: pa.array(columns["id"], pa.int64()),
                "event_timestamp": pa.array([ts_us] * n, pa.timestamp("us", tz="UTC")),
                **{f: v for f, v in columns.items() if f != "id"},
            }
        )
        pq.write_table(table, repo / "data" / f"{view}.parquet")
    ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts_us / 1e6))
    start = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts_us / 1e6 - 86400))
    end = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts_us / 1e6 + 3600))
    t0 = time.monotonic()
    for cmd in (["apply"], ["materialize", start, end]):
        proc = subprocess.run([feast, *cmd], cwd=repo, capture_output=True, text=True)
        if proc.returncode:
            raise RuntimeError(f"feast {cmd[0]} failed (data at {ts}):\n{proc.stderr[-3000:]}")
    return time.monotonic() - t0


def start_feast(python: Path, repo: Path, port: int, workers: int) -> subprocess.Popen[bytes]:
    """`feast serve` on 127.0.0.1, no access log, no periodic worker restarts."""
    import urllib.request

    args = [
        str(python.parent / "feast"), "serve", "-h", "127.0.0.1", "-p", str(port),
        "-w", str(workers), "--no-access-log", "--max-requests", "0",
        "--registry_ttl_sec", "3600",
    ]  # fmt: skip
    proc = subprocess.Popen(
        args, cwd=repo, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.monotonic() + 90
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            raise RuntimeError(f"feast serve -w {workers} did not start")
        time.sleep(0.3)
    time.sleep(1.0 if workers > 1 else 0.3)  # let every worker come up
    return proc


def stop_feast(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to gunicorn's master (its own session), which stops its workers."""
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        proc.wait()


def feast_body(skewless_json: str) -> str:
    """The same request (same service, same entity keys) as Feast's JSON body."""
    request = json.loads(skewless_json)
    entities = {
        key: [int(v["int64_value"]) for v in col["values"]]
        for key, col in request["entities"].items()
    }
    return json.dumps({"feature_service": request["feature_service"], "entities": entities})


_WRK_LUA = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [==[%s]==]
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"count": %%d, "duration_us": %%d, "errors": %%d, "p50": %%f, "p99": %%f, ' ..
    '"p999": %%f}\\n', summary.requests - e.status, summary.duration,
    e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    latency:percentile(99.9) / 1000))
end
"""


def check_feast(port: int, body: str) -> None:
    """One request by hand: Feast must answer 200 with every value PRESENT."""
    import urllib.request

    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/get-online-features",
        data=body.encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        answer = json.loads(r.read())
    statuses = {s for result in answer["results"] for s in result["statuses"]}
    names = answer["metadata"]["feature_names"]
    if statuses != {"PRESENT"}:
        raise RuntimeError(f"feast answered statuses {statuses} for {names}")


def wrk_load(port: int, body: Path, concurrency: int, duration: float) -> dict:
    script = body.with_suffix(".lua")
    if not script.exists():
        script.write_text(_WRK_LUA % body.read_text())
    args = [
        WRK, "-t", "1", "-c", str(concurrency), "-d", f"{max(1, round(duration))}s",
        "--timeout", "30s",
        "-s", str(script), f"http://127.0.0.1:{port}/get-online-features",
    ]  # fmt: skip
    started, cpu_before = time.monotonic(), _children_cpu()
    proc = subprocess.run(args, capture_output=True, text=True)
    wall = time.monotonic() - started
    if proc.returncode:
        raise RuntimeError(f"wrk failed: {proc.stdout} {proc.stderr}")
    line = next(x for x in proc.stdout.splitlines() if x.startswith("WRKJSON "))
    report = json.loads(line.removeprefix("WRKJSON "))
    nan = float("nan")  # no request completed within the duration: no percentiles
    return {
        "qps": report["count"] / (report["duration_us"] / 1e6),
        "p50": report["p50"] if report["count"] else nan,
        "p99": report["p99"] if report["count"] else nan,
        "p999": report["p999"] if report["count"] else nan,
        "errors": report["errors"],
        "ghz_cpu": (_children_cpu() - cpu_before) / wall,
        "requests": report["count"],
    }


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def print_feast_table(
    results: dict[tuple[str, str, int], dict],
    shapes: list[str],
    concurrencies: list[int],
    kinds: list[str],
) -> None:
    """skewless-N against feast-N (same number of worker processes), with the targets."""
    print()
    print("skewless vs Feast (same worker count); targets: QPS >= 5x Feast, p99 <= 1/5 of Feast's")
    print(
        "| shape | c | workers | skewless QPS | Feast QPS | QPS ratio | skewless p50/p99 ms "
        "| Feast p50/p99 ms | p99 Feast/skewless | targets met |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for shape in shapes:
        for c in concurrencies:
            for kind in kinds:
                if not kind.startswith("feast"):
                    continue
                n = kind.split("-")[1]
                ours_kind = next(
                    (k for k in (f"skewless-{n}", f"skewless-{n}raw") if k in kinds), None
                )
                f, o = results.get((kind, shape, c)), results.get((ours_kind or "", shape, c))
                if not f or not o:
                    continue
                qps = o["qps"] / f["qps"] if f["qps"] else float("inf")
                p99 = f["p99"] / o["p99"] if o["p99"] > 0 else float("inf")
                met = "yes" if qps >= 5 and p99 >= 5 else "NO"
                if not f["requests"]:
                    met = "NO (no Feast request completed in the run)"
                print(
                    f"| {shape} | {c} | {n} | {o['qps']:.0f} | {f['qps']:.0f} | {qps:.1f}x | "
                    f"{o['p50']:.2f} / {o['p99']:.2f} | {f['p50']:.2f} / {f['p99']:.2f} | "
                    f"{p99:.1f}x | {met} |"
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="runs per server, shape and concurrency, interleaved; medians are reported",
    )
    parser.add_argument("--entities", type=int, default=10_000)
    parser.add_argument("--wide-entities", type=int, default=2_000)
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument(
        "--servers", default="ideal,skewless-1,skewless-2,skewless-1raw,skewless-2raw"
    )
    parser.add_argument("--shapes", default="a,b,c,d")
    parser.add_argument(
        "--loadgen",
        choices=["ghz", "raw"],
        default="ghz",
        help="ghz, or the pass-through Go client built from bench/loadgen (far less CPU)",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        help="a checkout of another commit (with its .venv) served by the base-N kinds, "
        "e.g. --servers ideal,skewless-1raw,base-1raw",
    )
    parser.add_argument("--ideal-server", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--redis-url", help=argparse.SUPPRESS)
    parser.add_argument("--serve", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--typed-registration", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--feast",
        action="store_true",
        help="also run Feast 0.67's `feast serve` (HTTP, driven by wrk) on the same data",
    )
    parser.add_argument("--feast-python", default=str(FEAST_PYTHON))
    parser.add_argument(
        "--feast-duration",
        type=float,
        default=10.0,
        help="seconds per Feast run (longer: its wide requests take seconds at c=32)",
    )
    parser.add_argument(
        "--feast-workers", default="1,2", help="`feast serve -w N` servers to measure"
    )
    args = parser.parse_args()
    global BASELINE
    BASELINE = args.baseline.absolute() if args.baseline else None
    # absolute, not resolved: the venv's python is a symlink; Feast runs in its repo's folder
    args.feast_python = str(Path(args.feast_python).absolute())
    if args.serve:
        root, url, port, n = args.serve
        serve_skewless(root, url, int(port), int(n))
        return
    if args.ideal_server:
        asyncio.run(ideal_server(args.ideal_server, args.redis_url))
        return
    if args.loadgen == "ghz" and not Path(GHZ).exists() and shutil.which("ghz") is None:
        sys.exit(f"ghz not found at {GHZ}; see the module docstring")
    shapes = {
        "a": ("driver_customer", 1, "1 driver + 1 customer, 15 features"),
        "b": ("driver_customer", 100, "100 entities x 15 features"),
        "c": ("wide", 1, "1 entity x 250 features"),
        "d": ("wide", 100, "100 entities x 250 features"),
    }
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    if args.loadgen == "raw":
        build_loadgen()

    feast_kinds = [f"feast-{n}" for n in args.feast_workers.split(",")] if args.feast else []
    if feast_kinds and not Path(WRK).exists():
        sys.exit("wrk not found: apt-get install -y wrk")
    if feast_kinds and not Path(args.feast_python).exists():
        sys.exit(f"no Feast venv at {args.feast_python}; see bench/README.md")

    def drive(port: int, data: Path, c: int, duration: float, kind: str = "") -> dict:
        if kind.startswith("feast"):
            feast_duration = args.feast_duration if duration > 1.0 else duration
            return wrk_load(port, data.with_suffix(".json"), c, feast_duration)
        if args.loadgen == "raw":
            security = security_of(kind)
            extra: tuple[str, ...] = ()
            if security:
                extra = ("-cacert", str(root / "ca.pem"))
            if security == "jwt":
                extra += ("-token", token)
            return raw_load(port, data, c, duration, extra)
        return ghz(port, protoset, data, c, duration)

    secure_kinds = [k for k in args.servers.split(",") if security_of(k)]
    if secure_kinds and args.loadgen != "raw":
        sys.exit(f"{', '.join(secure_kinds)} need --loadgen raw (TLS and a token)")

    with tempfile.TemporaryDirectory(prefix="skewless-bench-") as tmp:
        root = Path(tmp)
        token = write_security_files(root) if secure_kinds else ""
        feast_redis = EmbeddedRedis(root / "redis-feast", persist=False) if feast_kinds else None
        with EmbeddedRedis(root / "redis", persist=False) as rs:
            t0 = time.monotonic()
            collect: dict[str, dict] | None = {} if feast_kinds else None
            ts_us = load_online(rs.url, args.entities, args.wide_entities, collect)
            print(
                f"loaded {args.entities} drivers, {args.entities} customers, "
                f"{args.wide_entities} wide entities in {time.monotonic() - t0:.1f}s"
            )
            if feast_redis is not None and collect is not None:
                feast_redis.start()
                feast_repo = root / "feast_repo"
                secs = feast_setup(
                    Path(args.feast_python), feast_repo, feast_redis.url, ts_us, collect
                )
                print(f"feast apply + materialize (same values, own Redis) in {secs:.1f}s")
            config = RepoConfig(root=root, project=PROJECT, data_dir=root / "data")
            registry = online_registry()
            registry.policies.append(bench_policy())  # read only when auth is on
            RegistryStore(config.storage).save(registry)
            protoset = root / "online.protoset"
            write_protoset(protoset)
            results: dict[tuple[str, str, int], dict] = {}
            load_before = os.getloadavg()
            # All servers run for the whole benchmark (idle ones cost nothing) and are
            # measured back to back for each shape and concurrency, so that changes in
            # the machine's load over time affect them alike.
            kinds = args.servers.split(",") + feast_kinds
            ports = {kind: free_port() for kind in kinds}
            procs = {}
            try:
                for kind in kinds:
                    if kind.startswith("feast"):
                        workers = int(kind.split("-")[1])
                        procs[kind] = start_feast(
                            Path(args.feast_python), feast_repo, ports[kind], workers
                        )
                    else:
                        procs[kind] = start_server(kind, root, rs.url, ports[kind])
                for shape in args.shapes.split(","):
                    service, rows, _label = shapes[shape]
                    data = root / f"request-{shape}.bin"
                    body = online_request(service, rows, args.entities, args.wide_entities)
                    data.write_bytes(
                        json_format.Parse(
                            body, online_service_pb2.GetOnlineFeaturesRequest()
                        ).SerializeToString()
                    )
                    if feast_kinds:  # the same request as Feast's JSON body
                        data.with_suffix(".json").write_text(feast_body(body))
                        for kind in feast_kinds:
                            check_feast(ports[kind], feast_body(body))
                    for kind in kinds:
                        drive(ports[kind], data, 4, 1.0, kind)  # warm up
                    for c in concurrencies:
                        runs: dict[str, list[dict]] = {kind: [] for kind in kinds}
                        for _ in range(args.repeat):
                            for kind in kinds:
                                runs[kind].append(drive(ports[kind], data, c, args.duration, kind))
                        for kind in kinds:
                            r = {
                                key: statistics.median(run[key] for run in runs[kind])
                                for key in runs[kind][0]
                            }
                            results[(kind, shape, c)] = r
                            print(
                                f"{kind:<13} {shape} c={c:<3} qps={r['qps']:8.0f} "
                                f"p50={r['p50']:7.2f} p99={r['p99']:7.2f} "
                                f"p99.9={r['p999']:7.2f} ms errors={r['errors']} "
                                f"loadgen_cpu={r['ghz_cpu']:.2f}",
                                flush=True,
                            )
            finally:
                for kind, proc in procs.items():
                    if not kind.startswith("feast"):
                        proc.terminate()
                for kind, proc in procs.items():
                    if kind.startswith("feast"):
                        stop_feast(proc)
                    else:
                        proc.wait(30)
                if feast_redis is not None:
                    feast_redis.stop()
            load_after = os.getloadavg()
    print()
    print(f"machine: {os.cpu_count()} cores; load average before {load_before}, after {load_after}")
    print(f"load generator: {args.loadgen} (its CPU, in cores, is the 'loadgen CPU' column)")
    if feast_kinds:
        print("Feast rows: `feast serve` (HTTP/JSON) driven by wrk -t 1 (compiled C)")
    print(
        "| shape | c | server | QPS | p50 ms | p99 ms | p99.9 ms | loadgen CPU "
        "| vs ideal (QPS, p50, p99) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for shape in args.shapes.split(","):
        for c in concurrencies:
            base = results.get(("ideal", shape, c))
            for kind in args.servers.split(","):
                r = results.get((kind, shape, c))
                if r is None:
                    continue
                ratio = ""
                if base and kind != "ideal":
                    ratio = (
                        f"{r['qps'] / base['qps']:.2f}x, {r['p50'] / base['p50']:.2f}x, "
                        f"{r['p99'] / base['p99']:.2f}x"
                    )
                print(
                    f"| {shape} | {c} | {kind} | {r['qps']:.0f} | {r['p50']:.2f} | "
                    f"{r['p99']:.2f} | {r['p999']:.2f} | {r['ghz_cpu']:.2f} | {ratio} |"
                )
    if feast_kinds:
        print_feast_table(results, args.shapes.split(","), concurrencies, kinds)
    if secure_kinds:
        print_security_table(results, args.shapes.split(","), concurrencies, secure_kinds)


def print_security_table(
    results: dict[tuple[str, str, int], dict],
    shapes: list[str],
    concurrencies: list[int],
    kinds: list[str],
) -> None:
    print()
    print("The cost of security, against skewless-1raw (plaintext, no auth), same run:")
    print("| shape | c | server | QPS | p50 ms | p99 ms | QPS vs plaintext | p99 vs plaintext |")
    print("|---|---|---|---|---|---|---|---|")
    for shape in shapes:
        for c in concurrencies:
            base = results.get(("skewless-1raw", shape, c))
            for kind in ["skewless-1raw", *kinds]:
                r = results.get((kind, shape, c))
                if r is None or base is None:
                    continue
                print(
                    f"| {shape} | {c} | {kind} | {r['qps']:.0f} | {r['p50']:.2f} | "
                    f"{r['p99']:.2f} | {r['qps'] / base['qps']:.2f}x | "
                    f"{r['p99'] / base['p99']:.2f}x |"
                )


if __name__ == "__main__":
    main()
