"""The cost of feature logging: online QPS with logging off, at sample rate 0.1 and 1.0.

Uses `bench/online.py`'s machinery (its Redis loading, request shapes, server start and
the raw Go load generator): three copies of the server on one Redis, identical but for
the services' `logging.sample_rate` (absent, 0.1, 1.0), measured back to back for each
shape and concurrency, `--repeat` interleaved runs, medians. The log's flush interval
is the default (5 s); each server writes its log into its own folder, whose rows are
counted at the end (every sampled call of every run must be there: nothing dropped).

It also times, in this process, the real `GetOnlineFeatures` handler (lookup plan, the
Redis round trip, the hand-off; no gRPC) at each sample rate, rounds interleaved, and the
hand-off itself (`FeatureLogger.sampled` + `offer`
on an already-built request and response, with a writer that discards): the only work
logging adds to a request's path.

Usage:
    .venv/bin/python bench/feature_log.py [--shapes a,b] [--concurrency 32]
        [--duration 3] [--repeat 3] [--workers 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import pyarrow.dataset as ds
from google.protobuf import json_format
from workload import PROJECT, load_online, online_registry, online_request

from online import build_loadgen, raw_load, start_server
from skewless.core.config import RepoConfig
from skewless.offline.feature_log import log_dir
from skewless.online.embedded_redis import EmbeddedRedis, free_port
from skewless.registry.registry_store import RegistryStore
from skewless.server.feature_logger import FeatureLogger
from skewless.v1 import online_service_pb2

SHAPES = {
    "a": ("driver_customer", 1, "1 driver + 1 customer, 15 features"),
    "b": ("driver_customer", 100, "100 entities x 15 features"),
}
FLUSH = 5.0
RATES = {"off": 0.0, "0.1": 0.1, "1.0": 1.0}
_TICK = os.sysconf("SC_CLK_TCK")


def tree_cpu(pid: int, *, writers: bool = True) -> float:
    """CPU seconds (user + system) of a live process and of its live descendants (without
    the feature log's writer processes unless `writers`)."""
    parents: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            command = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if not writers and b"skewless.server.log_writer" in command:
            continue
        parents[int(entry)] = int(fields[1])
        cpu[int(entry)] = (int(fields[11]) + int(fields[12])) / _TICK
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        total += cpu.get(current, 0.0)
        todo += [child for child, parent in parents.items() if parent == current]
    return total


def registry(rate: float):
    reg = online_registry()
    for service in reg.feature_services:
        if rate:
            service.logging.sample_rate = rate
    return reg


def hand_off_ns(request_bytes: bytes, response_bytes: bytes, calls: int = 200_000) -> float:
    """Nanoseconds per sampled() + offer() at sample rate 1.0, writer discarding."""
    config = RepoConfig(root=Path("."), project=PROJECT, data_dir=Path("."))
    # The writer never wakes during the loop (its work is off the request path).
    logger = FeatureLogger(
        config,
        flush_interval=3600.0,
        queue_calls=10_000_000,
        flush_calls=10**9,
        write=lambda *a: None,
    )
    logger.load(registry(1.0))
    request = online_service_pb2.GetOnlineFeaturesRequest.FromString(request_bytes)
    service = request.feature_service
    started = time.perf_counter_ns()
    for i in range(calls):
        if logger.sampled(service):
            logger.offer(service, request, response_bytes, request_time_us=i, registry_version=1)
    elapsed = time.perf_counter_ns() - started
    logger._queue.clear()  # decoding them is the writer's work, measured by the QPS runs
    logger.close()
    return elapsed / calls


class _Context:
    """What the online handler asks of a grpc.aio context."""

    def time_remaining(self) -> float:
        return 5.0

    def invocation_metadata(self) -> tuple:
        return ()

    def set_trailing_metadata(self, metadata: tuple) -> None:
        self.trailing = metadata


def handler_us(url: str, request_bytes: bytes, calls: int, rounds: int = 5) -> dict[str, float]:
    """Microseconds per call of the real handler (plan, Redis read, hand-off) in this
    process, per sample rate, rounds interleaved, the best round of each (no gRPC)."""
    import asyncio

    import redis.asyncio as aioredis

    from skewless.server.context import ServerContext
    from skewless.server.registry_holder import RegistryHolder
    from skewless.server.services.online import OnlineServicer

    with tempfile.TemporaryDirectory(prefix="skewless-bench-handler-") as tmp:
        root = Path(tmp)
        config = RepoConfig(
            root=root, project=PROJECT, data_dir=root / "data", redis_url=url, metrics_port=0
        )
        RegistryStore(config.storage).save(registry(0.0))
        holder = RegistryHolder(RegistryStore(config.storage))
        holder.reload()
        request = online_service_pb2.GetOnlineFeaturesRequest.FromString(request_bytes)

        async def run() -> dict[str, float]:
            ctx = ServerContext(config=config, registry=holder, redis=aioredis.Redis.from_url(url))
            servicer = OnlineServicer(ctx)
            servicer.logger.flush_interval = FLUSH
            best = dict.fromkeys(RATES, float("inf"))
            context = _Context()
            for _ in range(rounds):
                for name, rate in RATES.items():
                    servicer.logger.load(registry(rate))
                    started = time.perf_counter()
                    for _ in range(calls):
                        await servicer.get_online_features(request, context)  # type: ignore[arg-type]
                    best[name] = min(best[name], (time.perf_counter() - started) / calls * 1e6)
                    servicer.logger.flush()  # the writer's work, outside the timed loop
            servicer.logger.close()
            servicer.reader.close()
            await ctx.redis.aclose()
            return best

        return asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shapes", default="a,b")
    parser.add_argument("--concurrency", default="32")
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--entities", type=int, default=10_000)
    parser.add_argument(
        "--rates",
        default="off,0.1,1.0",
        help="sample rates of the servers, the first the baseline ('off' twice: an A/A test)",
    )
    args = parser.parse_args()
    RATES.clear()
    for rate in args.rates.split(","):
        name = rate if rate not in RATES else f"{rate}-{len(RATES)}"
        RATES[name] = 0.0 if rate == "off" else float(rate)
    build_loadgen()
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    kind = f"skewless-{args.workers}raw"
    results: dict[tuple[str, str, int], dict] = {}
    sampled_calls: dict[str, float] = dict.fromkeys(RATES, 0.0)
    with tempfile.TemporaryDirectory(prefix="skewless-bench-log-") as tmp:
        top = Path(tmp)
        with EmbeddedRedis(top / "redis", persist=False) as rs:
            load_online(rs.url, args.entities, 1)
            roots, ports, procs = {}, {}, {}
            load_before = os.getloadavg()
            try:
                for name, rate in RATES.items():
                    root = top / f"log-{name}"
                    config = RepoConfig(root=root, project=PROJECT, data_dir=root / "data")
                    RegistryStore(config.storage).save(registry(rate))
                    roots[name], ports[name] = root, free_port()
                    procs[name] = start_server(kind, root, rs.url, ports[name])
                handoffs: dict[str, float] = {}
                handlers: dict[str, dict[str, float]] = {}
                for shape in args.shapes.split(","):
                    service, rows, _ = SHAPES[shape]
                    data = top / f"request-{shape}.bin"
                    body = online_request(service, rows, args.entities, 1)
                    data.write_bytes(
                        json_format.Parse(
                            body, online_service_pb2.GetOnlineFeaturesRequest()
                        ).SerializeToString()
                    )
                    for name in RATES:
                        r = raw_load(ports[name], data, 4, 1.0)  # warm up
                        sampled_calls[name] += r["requests"] * RATES[name] * rows
                    for c in concurrencies:
                        runs: dict[str, list[dict]] = {name: [] for name in RATES}
                        # CPU over the whole block, and a flush interval after it: the
                        # writer's work lands after the calls it decodes.
                        time.sleep(FLUSH + 1)
                        cpu_before = {name: tree_cpu(procs[name].pid) for name in RATES}
                        own_before = {
                            name: tree_cpu(procs[name].pid, writers=False) for name in RATES
                        }
                        for _ in range(args.repeat):
                            for name in RATES:
                                r = raw_load(ports[name], data, c, args.duration)
                                runs[name].append(r)
                                sampled_calls[name] += r["requests"] * RATES[name] * rows
                        time.sleep(FLUSH + 1)
                        calls = {
                            name: max(sum(r["requests"] for r in runs[name]), 1) for name in RATES
                        }
                        cpu_us = {
                            name: (tree_cpu(procs[name].pid) - cpu_before[name]) / calls[name] * 1e6
                            for name in RATES
                        }
                        own_us = {
                            name: (tree_cpu(procs[name].pid, writers=False) - own_before[name])
                            / calls[name]
                            * 1e6
                            for name in RATES
                        }
                        for name in RATES:
                            results[(name, shape, c)] = {
                                k: statistics.median(run[k] for run in runs[name])
                                for k in runs[name][0]
                            }
                            r = results[(name, shape, c)]
                            r["cpu_us"] = cpu_us[name]
                            r["own_us"] = own_us[name]
                            print(
                                f"log {name:<4} {shape} c={c:<3} qps={r['qps']:8.0f} "
                                f"p50={r['p50']:6.2f} p99={r['p99']:6.2f} ms "
                                f"cpu={r['cpu_us']:6.1f} us/call (serving process "
                                f"{r['own_us']:6.1f}) errors={r['errors']}",
                                flush=True,
                            )
                    # The hand-off, on this shape's real request and response.
                    first = next(iter(RATES))
                    import grpc

                    from skewless.v1 import online_service_pb2_grpc

                    with grpc.insecure_channel(f"127.0.0.1:{ports[first]}") as channel:
                        stub = online_service_pb2_grpc.OnlineServiceStub(channel)
                        request = online_service_pb2.GetOnlineFeaturesRequest.FromString(
                            data.read_bytes()
                        )
                        response = stub.GetOnlineFeatures(request).SerializeToString()
                    handoffs[shape] = hand_off_ns(data.read_bytes(), response)
                    handlers[shape] = handler_us(rs.url, data.read_bytes(), 2000)
            finally:
                for proc in procs.values():
                    proc.terminate()
                for proc in procs.values():
                    proc.wait(60)  # SIGTERM flushes the logs
            load_after = os.getloadavg()
            logged = {}
            for name in RATES:
                folder = log_dir(
                    RepoConfig(root=roots[name], project=PROJECT, data_dir=roots[name] / "data"),
                    "driver_customer",
                )
                logged[name] = ds.dataset(folder).count_rows() if folder.exists() else 0
    print()
    print(f"machine: {os.cpu_count()} cores; load average before {load_before}, after {load_after}")
    print(f"servers: {args.workers} worker(s) each; load generator: raw (bench/loadgen)")
    print(
        "| shape | c | logging | QPS | p50 ms | p99 ms | QPS vs off | CPU us/call (server + "
        "writer) | CPU vs off | serving process CPU us/call | vs off |"
    )
    print("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for shape in args.shapes.split(","):
        for c in concurrencies:
            base = results[(next(iter(RATES)), shape, c)]
            for name in RATES:
                r = results[(name, shape, c)]
                print(
                    f"| {shape} | {c} | {name} | {r['qps']:.0f} | {r['p50']:.2f} | "
                    f"{r['p99']:.2f} | {r['qps'] / base['qps']:.3f} | {r['cpu_us']:.1f} | "
                    f"{r['cpu_us'] / base['cpu_us']:.3f} | {r['own_us']:.1f} | "
                    f"{r['own_us'] / base['own_us']:.3f} |"
                )
    print()
    for shape, ns in handoffs.items():
        print(f"hand-off on the request path, shape {shape}: {ns:.0f} ns per sampled call")
    for shape, per_rate in handlers.items():
        base = next(iter(per_rate.values()))
        shown = ", ".join(f"{name} {us:.1f} us ({us / base:.3f}x)" for name, us in per_rate.items())
        print(f"handler in process (no gRPC), shape {shape}, best of 5 rounds: {shown}")
    for name in RATES:
        print(
            f"logged rows, sample {name}: {logged[name]:,} (expected about "
            f"{sampled_calls[name]:,.0f})"
        )


if __name__ == "__main__":
    main()
