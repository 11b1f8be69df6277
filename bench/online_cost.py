"""Online serving cost per request: server CPU time and instructions, ideal against skewless.

Wall-clock QPS on a shared machine moves with everything else running on it; what a
server spends per request does not. This starts its own redis-server and loads the
workload of `online.py`, then for each server (the ideal bare server of `online.py`, and
skewless as `skewless.server.app` builds it, one process) and each request shape:

`skewless-asyncio` is skewless on asyncio's event loop instead of uvloop; `skewless-jwt`
checks a bearer JWT on every call (`auth.mode: jwt`, one RS256 token, over loopback
plaintext so that only the authentication is added). With `--baseline DIR`, `base-KIND`
serves KIND from another checkout (its own `.venv`), beside this one in the same run.

* `--mode cpu` (default): sends `--requests` calls at concurrency `--concurrency` and
  reports the server process's CPU time (user + system, from /proc) per request;
* `--mode callgrind`: runs the server under `valgrind --tool=callgrind`, zeroes its
  counters after the warm-up, sends the calls, dumps, and reports the instructions
  executed per request (every thread of the server, grpc's included).

The load comes from a grpc.aio client in this process: its cost is not counted.

Usage:
    .venv/bin/python bench/online_cost.py [--mode cpu|callgrind] [--shapes a,b]
        [--servers ideal,skewless] [--requests 2000] [--concurrency 1,32] [--repeat 3]
        [--baseline DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
from google.protobuf import json_format
from workload import PROJECT, load_online, online_registry, online_request

from skewless.core.config import RepoConfig
from skewless.online.embedded_redis import EmbeddedRedis, free_port
from skewless.registry.registry_store import RegistryStore
from skewless.v1 import online_service_pb2

HERE = Path(__file__).resolve().parent
METHOD = "/skewless.v1.OnlineService/GetOnlineFeatures"
SHAPES = {"a": ("driver_customer", 1), "b": ("driver_customer", 100)}
_CLK = os.sysconf("SC_CLK_TCK")


def serve_skewless(root: str, url: str, port: int, variant: str) -> None:
    """The server as `skewless serve` runs it, one process, no metrics port.

    `variant`: '' (uvloop), `asyncio` (asyncio's loop) or `jwt` (JWT authentication).
    """
    from online import _AUDIENCE, _ISSUER
    from skewless.core.auth_config import AuthConfig, JWTSettings
    from skewless.server.app import serve

    config = RepoConfig(
        root=Path(root),
        project=PROJECT,
        data_dir=Path(root) / "data",
        redis_url=url,
        server_port=port,
        metrics_port=0,
        **({"event_loop": variant} if variant == "asyncio" else {}),
        auth=AuthConfig(
            mode="jwt",
            jwt=JWTSettings(issuer=_ISSUER, audience=_AUDIENCE, jwks_file=Path(root) / "jwks.json"),
        )
        if variant == "jwt"
        else AuthConfig(),
    )
    serve(config)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK


async def drive(port: int, data: bytes, requests: int, concurrency: int, token: str = "") -> None:
    """Exactly `requests` calls, `concurrency` at a time, on one channel; all must be OK."""
    metadata = (("authorization", f"Bearer {token}"),) if token else None
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(METHOD)
        left = requests

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                await call(data, timeout=30, metadata=metadata)

        await asyncio.gather(*(worker() for _ in range(concurrency)))


def start(
    kind: str, root: Path, url: str, port: int, callgrind: Path | None, baseline: Path | None
) -> subprocess.Popen:
    if kind == "ideal":
        args = [sys.executable, str(HERE / "online.py"), "--ideal-server", str(port)]
        args += ["--redis-url", url]
    else:
        python = sys.executable
        if kind.startswith("base-"):  # the other checkout's venv imports its own code
            if baseline is None:
                sys.exit(f"{kind} needs --baseline DIR")
            python = str(baseline / ".venv" / "bin" / "python")
        variant = kind.removeprefix("base-").partition("-")[2]  # asyncio, jwt or ''
        args = [python, __file__, "--serve", str(root), url, str(port), variant]
    if callgrind is not None:
        args = [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={callgrind}",
            "--dump-instr=no",
            "--compress-strings=no",
            *args,
        ]
    log = (root / f"{kind}.log").open("wb")
    env = {**os.environ, "PYTHONPATH": str(HERE)}
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=log, env=env)
    deadline = time.monotonic() + (600 if callgrind else 60)
    while True:
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        try:
            grpc.channel_ready_future(channel).result(timeout=2)
            break
        except grpc.FutureTimeoutError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"{kind} did not start: see {root / kind}.log") from None
        finally:
            channel.close()
    return proc


def callgrind_total(path: Path) -> int:
    """The `summary:`/`totals:` Ir of the newest dump of a callgrind run."""
    dumps = sorted(path.parent.glob(path.name + "*"), key=lambda p: p.stat().st_mtime)
    for line in dumps[-1].read_text(errors="replace").splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise RuntimeError(f"no totals in {dumps[-1]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mode", choices=["cpu", "callgrind"], default="cpu")
    parser.add_argument("--shapes", default="a,b")
    parser.add_argument("--servers", default="ideal,skewless")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--concurrency", default="1,32")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--entities", type=int, default=10_000)
    parser.add_argument(
        "--keep", type=Path, help="copy the callgrind dumps here (for callgrind_annotate)"
    )
    parser.add_argument(
        "--baseline", type=Path, help="a checkout (with its .venv) served by the base-KIND kinds"
    )
    parser.add_argument("--serve", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        root, url, port, loop = args.serve
        serve_skewless(root, url, int(port), loop)
        return
    callgrind = args.mode == "callgrind"
    with tempfile.TemporaryDirectory(prefix="skewless-cost-") as tmp:
        root = Path(tmp)
        with EmbeddedRedis(root / "redis", persist=False) as rs:
            load_online(rs.url, args.entities, 10)
            config = RepoConfig(root=root, project=PROJECT, data_dir=root / "data")
            servers = args.servers.split(",")
            registry = online_registry()
            token = ""
            if any(kind.endswith("-jwt") for kind in servers):
                from online import bench_policy, write_security_files

                token = write_security_files(root)
                registry.policies.append(bench_policy())  # read only when auth is on
            RegistryStore(config.registry_path).save(registry)
            procs: dict[str, subprocess.Popen] = {}
            outs: dict[str, Path] = {}
            ports = {kind: free_port() for kind in servers}
            try:
                for kind in servers:
                    outs[kind] = root / f"callgrind.{kind}.out"
                    procs[kind] = start(
                        kind,
                        root,
                        rs.url,
                        ports[kind],
                        outs[kind] if callgrind else None,
                        args.baseline,
                    )
                print(f"load average at start {os.getloadavg()}", flush=True)
                rows = []
                for shape in args.shapes.split(","):
                    service, n = SHAPES[shape]
                    body = online_request(service, n, args.entities, 10)
                    data = json_format.Parse(
                        body, online_service_pb2.GetOnlineFeaturesRequest()
                    ).SerializeToString()
                    for c in [int(x) for x in args.concurrency.split(",")]:
                        costs: dict[str, list[float]] = {kind: [] for kind in servers}
                        for _ in range(1 if callgrind else args.repeat):
                            for kind in servers:  # interleaved
                                port, pid = ports[kind], procs[kind].pid
                                tok = token if kind.endswith("-jwt") else ""
                                asyncio.run(drive(port, data, args.warmup, c, tok))
                                if callgrind:
                                    subprocess.run(["callgrind_control", "-z", str(pid)],
                                                   check=True, capture_output=True)  # fmt: skip
                                    asyncio.run(drive(port, data, args.requests, c, tok))
                                    subprocess.run(["callgrind_control", "-d", str(pid)],
                                                   check=True, capture_output=True)  # fmt: skip
                                    costs[kind].append(callgrind_total(outs[kind]) / args.requests)
                                else:
                                    before = cpu_seconds(pid)
                                    asyncio.run(drive(port, data, args.requests, c, tok))
                                    used = cpu_seconds(pid) - before
                                    costs[kind].append(used / args.requests * 1e6)
                        for kind in servers:
                            rows.append((shape, c, kind, statistics.median(costs[kind])))
                            print(f"{shape} c={c} {kind}: {rows[-1][3]:,.0f}", flush=True)
            finally:
                for proc in procs.values():
                    proc.terminate()
                for proc in procs.values():
                    proc.wait(600)
                if args.keep is not None:
                    args.keep.mkdir(parents=True, exist_ok=True)
                    for dump in root.glob("callgrind.*"):
                        shutil.copy(dump, args.keep / dump.name)
    unit = "instructions per request" if callgrind else "server CPU us per request"
    print(f"\nload average at end {os.getloadavg()}; {os.cpu_count()} cores")
    print(f"| shape | c | server | {unit} | vs ideal |")
    print("|---|---|---|---|---|")
    base = {(s, c): v for s, c, k, v in rows if k == "ideal"}
    for shape, c, kind, value in rows:
        ratio = f"{value / base[(shape, c)]:.2f}x" if (shape, c) in base else ""
        print(f"| {shape} | {c} | {kind} | {value:,.0f} | {ratio} |")


if __name__ == "__main__":
    main()
