"""Redis stopped, killed and restarted while the real server is under bounded load.

Four client threads read a feature service in a loop (0.5 s deadlines) against
`skewless serve`, while the test SIGSTOPs Redis (connected but silent), SIGCONTs it,
SIGKILLs it and starts it again on the same port and data. Throughout:

- every call ends OK, UNAVAILABLE or DEADLINE_EXCEEDED, nothing else;
- every OK answer holds exactly the values written before (never a wrong or partial
  value, never a NOT_FOUND for a key that exists);
- no call outlives its deadline by more than 1 s;
- serving recovers within 2 s of Redis answering again.
"""

from __future__ import annotations

import datetime as dt
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pyarrow as pa
import pytest
import redis

from skewless.client import Client, SkewlessClientError
from skewless.online.embedded_redis import EmbeddedRedis
from tests.helpers.repos import live_definitions, save_registry

from .served import ServedProcess, serve, write_repo

UTC_US = pa.timestamp("us", tz="UTC")
T0 = dt.datetime(2024, 5, 1, 12, tzinfo=dt.UTC)
IDS = [1, 2, 3, 4, 5]
ALLOWED = {"OK", "UNAVAILABLE", "DEADLINE_EXCEEDED"}
DEADLINE = 0.5


@dataclass
class Call:
    started: float
    ended: float
    code: str
    correct: bool


@dataclass
class Load:
    target: str
    expected: dict[str, list[object]]
    calls: list[Call] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def worker(self) -> None:
        with Client(self.target, timeout=DEADLINE) as client:
            while not self.stop.is_set():
                started = time.monotonic()
                code, correct = "OK", True
                try:
                    got = client.get_online_features({"driver_id": IDS}, feature_service="live")
                    values = got.to_dict(include_entities=False)
                    correct = values == self.expected and all(
                        s == "PRESENT" for column in got.statuses().values() for s in column
                    )
                except SkewlessClientError as exc:
                    code = exc.code.name if exc.code is not None else "NONE"
                with self.lock:
                    self.calls.append(Call(started, time.monotonic(), code, correct))
                time.sleep(0.01)  # bounded load: about 4 x 100 calls a second at most

    def since(self, when: float) -> list[Call]:
        with self.lock:
            return [c for c in self.calls if c.started >= when]

    def first_ok_after(self, when: float, timeout: float = 10.0) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for call in self.since(when):
                if call.code == "OK":
                    return call.ended - when
            time.sleep(0.02)
        raise AssertionError(f"no OK answer within {timeout} s")


def _rows() -> pa.Table:
    n = len(IDS)
    return pa.table(
        {
            "driver_id": pa.array(IDS, pa.int64()),
            "ts": pa.array([T0] * n, UTC_US),
            "created": pa.nulls(n, UTC_US),
            "conv_rate": pa.array([0.5 + i for i in range(n)], pa.float64()),
            "trips": pa.array([10 * i for i in range(n)], pa.int64()),
            "note": pa.array([f"note {i}" for i in range(n)], pa.string()),
        }
    )


@pytest.fixture
def redis_and_server(tmp_path: Path) -> Iterator[tuple[EmbeddedRedis, ServedProcess]]:
    store = EmbeddedRedis(tmp_path / "redis", persist=True).start()
    try:
        repo = write_repo(tmp_path / "repo", "chaos", store.url)
        from skewless.core.config import load_repo_config

        save_registry(load_repo_config(repo), live_definitions())
        with serve(repo) as served:
            yield store, served
    finally:
        store.stop()


def _wait_redis(port: int, timeout: float = 10.0) -> float:
    """Waits until Redis answers PING; returns when it did (monotonic)."""
    client = redis.Redis(port=port, socket_timeout=0.2)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            try:
                if client.ping():
                    return time.monotonic()
            except redis.RedisError:
                time.sleep(0.02)
        raise AssertionError("redis did not come back")
    finally:
        client.close()


@pytest.mark.slow
def test_serving_survives_redis_stopped_killed_and_restarted(
    redis_and_server: tuple[EmbeddedRedis, ServedProcess],
) -> None:
    store, served = redis_and_server
    with Client(served.target, timeout=10) as client:
        client.push_features(_rows(), push_source="driver_push")
        expected = client.get_online_features({"driver_id": IDS}, feature_service="live")
    load = Load(served.target, expected.to_dict(include_entities=False))
    time.sleep(1.2)  # the append-only file is fsynced every second
    threads = [threading.Thread(target=load.worker, daemon=True) for _ in range(4)]
    for thread in threads:
        thread.start()
    recoveries: dict[str, float] = {}
    try:
        time.sleep(1.0)
        assert {c.code for c in load.since(0)} == {"OK"}
        assert store.process is not None
        # 1. Connected but silent.
        store.process.send_signal(signal.SIGSTOP)
        stopped = time.monotonic()
        time.sleep(2.0)
        store.process.send_signal(signal.SIGCONT)
        resumed = time.monotonic()
        assert {c.code for c in load.since(stopped + DEADLINE + 0.2) if c.ended < resumed} <= {
            "UNAVAILABLE",
            "DEADLINE_EXCEEDED",
        }
        recoveries["SIGSTOP"] = load.first_ok_after(resumed)
        time.sleep(1.0)
        # 2. Killed, then started again on its data.
        store.process.send_signal(signal.SIGKILL)
        store.process.wait()
        if store.process.stderr is not None:
            store.process.stderr.close()
        store.process = None
        killed = time.monotonic()
        time.sleep(1.5)
        assert {c.code for c in load.since(killed + DEADLINE + 0.2)} <= {
            "UNAVAILABLE",
            "DEADLINE_EXCEEDED",
        }
        store.start()
        back = _wait_redis(store.port)
        recoveries["SIGKILL + restart"] = load.first_ok_after(back)
        time.sleep(1.0)
        # 3. A clean restart.
        store.stop()
        store.start()
        back = _wait_redis(store.port)
        recoveries["restart"] = load.first_ok_after(back)
        time.sleep(1.0)
    finally:
        load.stop.set()
        for thread in threads:
            thread.join(5)
        if store.process is not None:
            store.process.send_signal(signal.SIGCONT)
    calls = load.calls
    codes = {c.code for c in calls}
    assert codes <= ALLOWED, codes
    assert all(c.correct for c in calls if c.code == "OK"), "an OK answer held a wrong value"
    late = [round(c.ended - c.started, 2) for c in calls if c.ended - c.started > DEADLINE + 1.0]
    assert not late, late
    assert {"UNAVAILABLE"} & codes and "OK" in codes
    print(
        f"\n{len(calls)} calls: "
        + ", ".join(f"{code}={sum(c.code == code for c in calls)}" for code in sorted(codes))
        + "; recovery after Redis answered: "
        + ", ".join(f"{what} {seconds:.2f} s" for what, seconds in recoveries.items())
    )
    for what, seconds in recoveries.items():
        assert seconds < 2.0, f"{what}: serving recovered {seconds:.2f} s after Redis"
    # Health tells the truth again.
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(served.target) as channel:
        deadline = time.monotonic() + 5
        while True:
            status = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=2
            )
            if status.status == health_pb2.HealthCheckResponse.SERVING:
                break
            assert time.monotonic() < deadline
            time.sleep(0.1)
