"""Web console benchmark: server time of its pages with a registry of 1,000 feature views.

Builds a registry in bench/.data/console/ (1,000 views of 10 features each over 100
sources and 50 entities, 200 feature services of 5 views each, descriptions, owners and
tags everywhere), starts its own redis-server, the real skewless server and the console
on 127.0.0.1, then requests each page `--repeat` times (after two warm-up requests) and
reads the console's `Server-Timing` header: the handler's time from the request to the
rendered page, its gRPC calls to the server included. The target is under 200 ms for
the search and feature view pages.

The console, the server and the HTTP client run in this one process (Redis apart), so
the process's CPU time per request (`time.process_time`) is the work one page costs,
console and server together; unlike the wall-clock figures it hardly moves when other
programs load the machine.

Usage:

    .venv/bin/python bench/console.py [--views 1000] [--repeat 20]
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import sys
import time
import urllib.request
from collections.abc import Callable
from itertools import permutations
from pathlib import Path

from google.protobuf import duration_pb2

from skewless.console import ConsoleServer, ConsoleSettings
from skewless.core.config import RepoConfig
from skewless.online.embedded_redis import EmbeddedRedis
from skewless.registry.registry_store import RegistryStore
from skewless.v1 import registry_pb2, types_pb2

HERE = Path(__file__).resolve().parent
DATA = HERE / ".data" / "console"
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
from tests.integration.served import ServerThread  # noqa: E402

VT = types_pb2.ValueType
TYPES = [VT.VALUE_TYPE_FLOAT64, VT.VALUE_TYPE_INT64, VT.VALUE_TYPE_STRING, VT.VALUE_TYPE_BOOL]
TIMING = re.compile(r"app;dur=([\d.]+)")
TARGET_MS = 200.0
#: Words every feature's text holds: their ordered pairs are distinct queries with the
#: same 10,000 matches, so no request is answered from the server's cache of searches.
EVERYWHERE = ["feature", "view", "team", "example", "statistics", "kind", "measure", "days"]
FRESH_QUERIES = [f"/search?q={a}+{b}" for a, b in permutations(EVERYWHERE, 2)]


def build_registry(n_views: int) -> registry_pb2.Registry:
    reg = registry_pb2.Registry(project="bench", version=1)
    for e in range(50):
        reg.entities.add(
            name=f"entity_{e:02d}",
            join_keys=[registry_pb2.JoinKey(name=f"key_{e:02d}", value_type=VT.VALUE_TYPE_INT64)],
            description=f"Entity number {e}.",
            owner=f"team-{e % 7}@example.com",
            tags={"domain": f"d{e % 5}"},
        )
    for s in range(100):
        src = reg.data_sources.add(
            name=f"source_{s:03d}",
            timestamp_field="event_timestamp",
            description=f"Source number {s}.",
            owner=f"data-{s % 4}@example.com",
        )
        src.file.path = f"data/source_{s:03d}.parquet"
    for v in range(n_views):
        view = reg.feature_views.add(
            name=f"view_{v:04d}",
            entities=[f"entity_{v % 50:02d}"],
            source=f"source_{v % 100:03d}",
            sql=f"SELECT *, {v} AS version FROM source WHERE key_{v % 50:02d} IS NOT NULL",
            ttl=duration_pb2.Duration(seconds=86400 * (1 + v % 7)),
            schedule=duration_pb2.Duration(seconds=3600 if v % 3 == 0 else 0),
            online=True,
            offline=True,
            description=f"Statistics of kind {v % 13} for entity {v % 50}.",
            owner=f"team-{v % 7}@example.com",
            tags={"tier": ["gold", "silver", "bronze"][v % 3], "domain": f"d{v % 5}"},
        )
        for f in range(10):
            view.features.add(
                name=f"feature_{f}",
                value_type=TYPES[f % len(TYPES)],
                description=f"Feature {f} of view {v}: a measure over the last {f + 1} days.",
                tags={"unit": "count"} if f % 2 else {},
            )
    for s in range(200):
        service = reg.feature_services.add(
            name=f"service_{s:03d}",
            description=f"Inputs of model {s}.",
            owner=f"ml-{s % 9}@example.com",
        )
        for k in range(5):
            service.projections.add(feature_view=f"view_{(s * 5 + k) % n_views:04d}")
    return reg


def measure(
    url: str | Callable[[int], str], repeat: int
) -> tuple[list[float], list[float], list[float], int]:
    server_ms: list[float] = []
    wall_ms: list[float] = []
    cpu_ms: list[float] = []
    size = 0
    for i in range(repeat + 2):
        started = time.perf_counter()
        cpu_started = time.process_time()
        page = url if isinstance(url, str) else url(i)
        with urllib.request.urlopen(page, timeout=30) as response:
            body = response.read()
            timing = response.headers.get("Server-Timing", "")
            assert response.status == 200, (url, response.status)
        elapsed = (time.perf_counter() - started) * 1000
        cpu = (time.process_time() - cpu_started) * 1000
        if i >= 2:
            match = TIMING.search(timing)
            assert match, timing
            server_ms.append(float(match.group(1)))
            wall_ms.append(elapsed)
            cpu_ms.append(cpu)
        size = len(body)
    return server_ms, wall_ms, cpu_ms, size


def _prefixed(base: str, path: Callable[[int], str]) -> Callable[[int], str]:
    return lambda i: base + path(i)


def _p95(values: list[float]) -> float:
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=20, method="inclusive")[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--views", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--pages", default="", help="only the pages whose label has this text")
    args = parser.parse_args()

    shutil.rmtree(DATA, ignore_errors=True)
    DATA.mkdir(parents=True)
    redis = EmbeddedRedis(DATA / "redis", persist=False).start()
    config = RepoConfig(
        root=DATA, project="bench", data_dir=DATA / ".skewless", redis_url=redis.url, server_port=0
    )
    RegistryStore(config.storage).save(build_registry(args.views))
    server = ServerThread(config, run_schedules=False).start()
    console = ConsoleServer(ConsoleSettings(target=f"127.0.0.1:{server.port}"), port=0).start()
    pages: list[tuple[str, str | Callable[[int], str], bool]] = [
        ("search, 1 match", "/search?q=view_0500+feature_3", True),
        ("search, every feature matches (page of 50)", "/search?q=feature", True),
        ("search by tag values (page of 50)", "/search?q=gold+count", True),
        (
            "search, every feature matches, a new query each time (page of 50)",
            lambda i: FRESH_QUERIES[i % len(FRESH_QUERIES)],
            True,
        ),
        ("feature view", "/views/view_0500", True),
        ("feature service", "/services/service_100", False),
        ("data source (10 views)", "/sources/source_050", False),
        ("entity (20 views)", "/entities/entity_25", False),
        ("overview (counts)", "/", False),
        ("all views (list)", "/views", False),
        ("freshness (all views)", "/freshness", False),
        ("view freshness", "/views/view_0500/freshness", False),
    ]
    try:
        print(
            f"{args.views:,} feature views, {args.views * 10:,} features; "
            f"{args.repeat} requests per page after 2 warm-ups; console server time "
            "(Server-Timing), wall time at the client, and CPU time of the process "
            "(console + server + client) per request, ms"
        )
        print()
        print(
            "| page | server p50 | server p95 | server max | wall p50 | CPU p50 | CPU p95 "
            "| HTML KB | target |"
        )
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
        for label, path, targeted in pages:
            if args.pages not in label:
                continue
            url = console.url + path if isinstance(path, str) else _prefixed(console.url, path)
            server_ms, wall_ms, cpu_ms, size = measure(url, args.repeat)
            p95 = _p95(server_ms)
            verdict = ""
            if targeted:
                verdict = "ok" if p95 < TARGET_MS else f"over {TARGET_MS:.0f} ms"
            print(
                f"| {label} | {statistics.median(server_ms):.1f} | {p95:.1f} | "
                f"{max(server_ms):.1f} | {statistics.median(wall_ms):.1f} | "
                f"{statistics.median(cpu_ms):.1f} | {_p95(cpu_ms):.1f} | {size / 1024:.0f} | "
                f"{verdict} |"
            )
    finally:
        console.stop()
        server.stop()
        redis.stop()


if __name__ == "__main__":
    main()
