"""Soak test: mixed traffic for a long time against `skewless serve` with TLS and JWT auth.

Not part of `make test`. Starts its own redis-server and `skewless serve` (TLS on the
port, `auth.mode: jwt` with a JWKS made for the run, policies granting the client what it
does), measures the maximum online QPS for a few seconds, then for `--duration` seconds
(default 600) runs at `--load` (default 80%) of it a mix of:

- online reads of every shape (a feature service, a feature list, 1 and 100 entities);
- pushes of fresh rows (online and offline);
- a scheduled materialization (a view over a Parquet source with `schedule: 30s`);
- historical pulls (inline entity rows), one every few seconds.

Every call must succeed. Each interval (`--interval`, default 30 s) prints calls and errors
by kind, online p99, the server's RSS and open file descriptors; the end reports the
errors (must be 0), the p99 over time, the RSS drift after warm-up (target < 5 %; also of the
least RSS sampled each second of an interval, which pulls' transient peaks do not move) and
the fd drift, with the machine's load average.

Usage:
    .venv/bin/python bench/soak.py [--duration 600] [--load 0.8] [--interval 30] [--workers 4]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import jwt
import pyarrow as pa
import pyarrow.parquet as pq
import trustme
from cryptography.hazmat.primitives.asymmetric import rsa

from skewless.client import Client, SkewlessClientError
from skewless.online.embedded_redis import EmbeddedRedis

ROOT = Path(__file__).resolve().parents[1]
ISSUER = "https://issuer.soak.skewless/"
AUDIENCE = "skewless-soak"
UTC_US = pa.timestamp("us", tz="UTC")
DRIVERS = 5_000


def write_repo(root: Path, redis_url: str) -> str:
    """The repository, certificates, JWKS and policies; returns the client's token."""
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(root / "ca.pem"))
    leaf = ca.issue_cert("127.0.0.1", "localhost")
    leaf.private_key_pem.write_to_path(str(root / "server.key"))
    (root / "server.pem").write_bytes(b"".join(b.bytes() for b in leaf.cert_chain_pems))
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    public.update(kid="soak", alg="RS256", use="sig")
    (root / "jwks.json").write_text(json.dumps({"keys": [public]}))
    now = int(time.time())
    token = jwt.encode(
        {"iss": ISSUER, "aud": AUDIENCE, "sub": "soak-client", "iat": now, "exp": now + 86400},
        key,
        algorithm="RS256",
        headers={"kid": "soak"},
    )
    (root / "data").mkdir()
    start = dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)
    n = DRIVERS
    pq.write_table(
        pa.table(
            {
                "driver_id": pa.array(range(n), pa.int64()),
                "event_timestamp": pa.array([start] * n, UTC_US),
                "rating": pa.array([random.random() * 5 for _ in range(n)], pa.float64()),
            }
        ),
        root / "data" / "ratings.parquet",
    )
    (root / "skewless.yaml").write_text(
        f"""project: soak
data_dir: .skewless
online_store: {{redis_url: {redis_url}}}
server:
  tls: {{cert_file: server.pem, key_file: server.key}}
auth:
  mode: jwt
  jwt: {{issuer: "{ISSUER}", audience: {AUDIENCE}, jwks_file: jwks.json}}
"""
    )
    (root / "features").mkdir()
    (root / "features" / "soak.yaml").write_text(
        """entities:
  - {name: driver, join_keys: [driver_id], value_type: INT64}
sources:
  - {name: driver_push, type: push, timestamp_field: ts}
  - {name: ratings, type: file, path: data/ratings.parquet, timestamp_field: event_timestamp}
feature_views:
  - name: driver_live
    entities: [driver]
    source: driver_push
    features:
      - {name: conv_rate, type: FLOAT64}
      - {name: trips, type: INT64}
      - {name: note, type: STRING}
  - name: driver_rating
    entities: [driver]
    source: ratings
    schedule: 30s
    features:
      - {name: rating, type: FLOAT64}
feature_services:
  - {name: live, features: [driver_live, driver_rating]}
policies:
  - name: soak
    subjects: [soak-client]
    actions: [read_online, read_historical, push, materialize, read_registry]
    resources: [project]
"""
    )
    subprocess.run(
        [sys.executable, "-m", "skewless.cli", "apply", str(root)], check=True, capture_output=True
    )
    return token


def push_rows(ids: list[int]) -> pa.Table:
    now = dt.datetime.now(dt.UTC)
    return pa.table(
        {
            "driver_id": pa.array(ids, pa.int64()),
            "ts": pa.array([now] * len(ids), UTC_US),
            "conv_rate": pa.array([random.random() for _ in ids], pa.float64()),
            "trips": pa.array([random.randint(0, 100) for _ in ids], pa.int64()),
            "note": pa.array([f"n{i}" for i in ids], pa.string()),
        }
    )


class Stats:
    """Latencies and errors per kind, per interval."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latencies: dict[str, list[float]] = defaultdict(list)
        self.errors: dict[str, int] = defaultdict(int)
        self.error_samples: list[str] = []

    def record(self, kind: str, seconds: float, error: str | None) -> None:
        with self.lock:
            if error is None:
                self.latencies[kind].append(seconds)
            else:
                self.errors[kind] += 1
                if len(self.error_samples) < 10:
                    self.error_samples.append(f"{kind}: {error}")

    def take(self) -> tuple[dict[str, list[float]], dict[str, int]]:
        with self.lock:
            out = (dict(self.latencies), dict(self.errors))
            self.latencies = defaultdict(list)
            self.errors = defaultdict(int)
            return out


def timed(stats: Stats, kind: str, call: object) -> None:
    started = time.perf_counter()
    try:
        call()  # type: ignore[operator]
    except SkewlessClientError as exc:
        stats.record(kind, time.perf_counter() - started, f"{exc.code} {exc.message[:120]}")
        return
    stats.record(kind, time.perf_counter() - started, None)


def online_calls(client: Client) -> list[tuple[str, object]]:
    def one() -> object:
        return client.get_online_features(
            {"driver_id": [random.randrange(DRIVERS)]}, feature_service="live"
        )

    def hundred() -> object:
        return client.get_online_features(
            {"driver_id": random.sample(range(DRIVERS), 100)}, feature_service="live"
        )

    def listed() -> object:
        return client.get_online_features(
            {"driver_id": [random.randrange(DRIVERS)]},
            features=["driver_live:trips", "driver_rating:rating"],
            full_feature_names=True,
        )

    return [("online_1", one), ("online_100", hundred), ("online_list", listed)]


def rss_fds(pid: int) -> tuple[int, int]:
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


def measure_max_qps(target: str, kwargs: dict, workers: int, seconds: float) -> float:
    stop = time.monotonic() + seconds
    counts = [0] * workers

    def run(i: int) -> None:
        with Client(target, **kwargs) as client:
            calls = online_calls(client)
            while time.monotonic() < stop:
                calls[counts[i] % len(calls)][1]()  # type: ignore[operator]
                counts[i] += 1

    threads = [threading.Thread(target=run, args=(i,)) for i in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(counts) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of traffic")
    parser.add_argument("--load", type=float, default=0.8, help="fraction of the max QPS")
    parser.add_argument("--interval", type=float, default=30.0, help="seconds per report row")
    parser.add_argument("--workers", type=int, default=4, help="client threads")
    parser.add_argument("--warmup", type=float, default=0.2, help="fraction not in the drift")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="skewless-soak-") as tmp:
        root = Path(tmp)
        with EmbeddedRedis(root / "redis", persist=False) as store:
            token = write_repo(root, store.url)
            server = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "skewless.cli",
                    "serve",
                    str(root),
                    "--port",
                    "0",
                    "--metrics-port",
                    "0",
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            try:
                run(args, root, token, server)
            finally:
                server.terminate()
                server.wait(30)


def run(args: argparse.Namespace, root: Path, token: str, server: subprocess.Popen[str]) -> None:
    assert server.stdout is not None
    port = 0
    for line in server.stdout:
        if "serving project" in line:
            port = int(line.split(" on ")[1].split()[0].rsplit(":", 1)[1])
            break
    if not port:
        raise SystemExit("the server did not start")
    threading.Thread(target=lambda: [None for _ in server.stdout], daemon=True).start()  # type: ignore[union-attr]
    target = f"127.0.0.1:{port}"
    kwargs = {"root_certificates": (root / "ca.pem").read_bytes(), "token": token, "timeout": 10}
    with Client(target, **kwargs) as client:
        for start in range(0, DRIVERS, 1000):
            client.push_features(
                push_rows(list(range(start, start + 1000))), push_source="driver_push"
            )
        # driver_rating is materialized by the server's scheduler (schedule: 30s).
    max_qps = measure_max_qps(target, kwargs, args.workers, 5.0)
    rate = max_qps * args.load
    print(
        f"max online QPS {max_qps:.0f} (TLS + JWT, {args.workers} client threads); "
        f"soaking at {rate:.0f}/s ({args.load:.0%}) for {args.duration:.0f} s"
    )
    stats = Stats()
    stop = threading.Event()
    per_worker = rate / args.workers

    def online_worker() -> None:
        with Client(target, **kwargs) as client:
            calls = online_calls(client)
            next_at = time.monotonic()
            i = 0
            while not stop.is_set():
                kind, call = calls[i % len(calls)]
                timed(stats, kind, call)
                i += 1
                next_at += 1.0 / per_worker
                delay = next_at - time.monotonic()
                if delay > 0:
                    time.sleep(delay)

    def side_worker() -> None:
        with Client(target, **kwargs) as client:
            last_pull = 0.0
            while not stop.is_set():
                ids = random.sample(range(DRIVERS), 50)
                timed(
                    stats,
                    "push",
                    lambda ids=ids: client.push_features(push_rows(ids), push_source="driver_push"),
                )
                if time.monotonic() - last_pull > 5:
                    last_pull = time.monotonic()
                    entity_rows = pa.table(
                        {
                            "driver_id": pa.array(random.sample(range(DRIVERS), 500), pa.int64()),
                            "event_timestamp": pa.array([dt.datetime.now(dt.UTC)] * 500, UTC_US),
                        }
                    )
                    timed(
                        stats,
                        "historical",
                        lambda rows=entity_rows: client.get_historical_features(
                            rows, feature_service="live"
                        ),
                    )
                time.sleep(0.2)

    threads = [threading.Thread(target=online_worker, daemon=True) for _ in range(args.workers)]
    threads.append(threading.Thread(target=side_worker, daemon=True))
    for thread in threads:
        thread.start()
    rows: list[tuple[float, float, int, int, dict[str, int], int, int]] = []
    started = time.monotonic()
    total_errors = 0
    print(
        "| t (s) | online calls | online p99 ms | pushes | pulls | errors "
        "| server RSS MiB | RSS floor MiB | fds | load |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    while time.monotonic() - started < args.duration:
        # The floor (least RSS sampled each second) hides the transient peaks of pulls.
        floor = rss_fds(server.pid)[0]
        end = min(time.monotonic() + args.interval, started + args.duration)
        while (left := end - time.monotonic()) > 0:
            time.sleep(min(1.0, left))
            floor = min(floor, rss_fds(server.pid)[0])
        latencies, errors = stats.take()
        online = [x for k, v in latencies.items() if k.startswith("online") for x in v]
        p99 = statistics.quantiles(online, n=100)[98] * 1000 if len(online) > 100 else float("nan")
        rss, fds = rss_fds(server.pid)
        n_errors = sum(errors.values())
        total_errors += n_errors
        t = time.monotonic() - started
        floor = min(floor, rss)
        rows.append((t, p99, rss, fds, errors, len(online), floor))
        print(
            f"| {t:.0f} | {len(online)} | {p99:.2f} | {len(latencies.get('push', []))} | "
            f"{len(latencies.get('historical', []))} | {n_errors} | {rss / 2**20:.0f} | "
            f"{floor / 2**20:.0f} | {fds} | {os.getloadavg()[0]:.1f} |",
            flush=True,
        )
    stop.set()
    for thread in threads:
        thread.join(15)
    warm = [r for r in rows if r[0] >= args.duration * args.warmup] or rows
    first, last = warm[0], warm[-1]
    drift = (last[2] - first[2]) / first[2] if first[2] else 0.0
    floor_drift = (last[6] - first[6]) / first[6] if first[6] else 0.0
    print()
    print(
        f"errors: {total_errors}" + (f" (e.g. {stats.error_samples[:3]})" if total_errors else "")
    )
    print(f"online p99 over time (ms): {', '.join(f'{r[1]:.1f}' for r in rows)}")
    print(
        f"server RSS after warm-up: {first[2] / 2**20:.0f} -> {last[2] / 2**20:.0f} MiB "
        f"(drift {drift:+.1%}); floor {first[6] / 2**20:.0f} -> {last[6] / 2**20:.0f} MiB "
        f"(drift {floor_drift:+.1%}); fds {first[3]} -> {last[3]}"
    )
    with Client(target, **kwargs) as client:
        jobs = list(client.list_materialization_jobs())
    states: dict[str, int] = defaultdict(int)
    for job in jobs:
        states[str(job.state)] += 1
    failed = sum(1 for job in jobs if job.error_status.code != 0)
    total_errors += failed
    print(f"materialization jobs (the scheduler, every 30 s): {len(jobs)}, failed {failed}")
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()}")
    if total_errors:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
