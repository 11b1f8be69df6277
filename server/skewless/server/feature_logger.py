"""Feature logging: sampled online calls handed off to a bounded queue, written in batches.

The request path does three cheap things for a call of a logged feature service
(`FeatureService.logging.sample_rate` > 0): draws the sample, and if taken appends a
`LoggedCall` (the parsed request, the response bytes as sent, the request time, a
request id and the registry version) to a bounded queue, and echoes the request id in
the trailing metadata `x-skewless-request-id` (a caller may send its own id under that
key; it is kept). Nothing is decoded there.

A background thread wakes every `flush_interval` seconds (or when the queue holds
`flush_calls` calls) and hands the queued calls to the process's writer process
(`skewless.server.log_writer`), which decodes them column by column
(`skewless.offline.feature_log.decode_calls`) and writes one Parquet file per service and
day, off this process's GIL. Should the writer process be gone, that flush is decoded and
written here instead (nothing is lost); after three such flushes in a row the logger
keeps writing here. When the queue is full a call is dropped and its rows counted in
`skewless_feature_log_dropped_total{feature_service}`: serving is never slowed or failed.
`close` (the server's SIGTERM path) writes everything queued. A crash (SIGKILL, power
loss) loses at most the calls of one flush interval: those queued since the last write.
"""

from __future__ import annotations

import collections
import logging
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from itertools import count

from prometheus_client import Counter

from skewless.core.config import RepoConfig
from skewless.core.errors import SkewlessError
from skewless.offline.feature_log import LoggedCall, decode_calls, write_log_file
from skewless.registry.feature_refs import FeaturePlan, resolve_feature_service
from skewless.server.log_writer import SentCall, WriteResult, WriterGoneError, WriterProcess
from skewless.v1 import online_service_pb2, registry_pb2

__all__ = ["REQUEST_ID_KEY", "FeatureLogger"]

_log = logging.getLogger(__name__)

#: The metadata key carrying the request id of a logged call (both directions).
REQUEST_ID_KEY = "x-skewless-request-id"
_MAX_CALLER_ID = 128

LOGGED_ROWS = Counter(
    "skewless_feature_log_rows_total",
    "Entity rows written to the feature log, by feature service.",
    ["feature_service"],
)
DROPPED_ROWS = Counter(
    "skewless_feature_log_dropped_total",
    "Entity rows of sampled calls dropped because the feature log queue was full.",
    ["feature_service"],
)
WRITE_ERRORS = Counter(
    "skewless_feature_log_write_errors_total",
    "Feature log batches that could not be decoded or written (their rows are lost).",
    ["feature_service"],
)


#: A queued call: service, request, response bytes, request time (µs), id, version, and
#: the request's bytes as received (empty: serialize the request again).
_Queued = tuple[str, online_service_pb2.GetOnlineFeaturesRequest, bytes, int, str, int, bytes]


@dataclass(frozen=True)
class _Service:
    rate: float
    plans: dict[int, FeaturePlan]


class FeatureLogger:
    """The hand-off queue and the background writer of one server process."""

    def __init__(
        self,
        config: RepoConfig,
        *,
        flush_interval: float | None = None,
        queue_calls: int | None = None,
        flush_calls: int = 2048,
        write: Callable[[RepoConfig, str, object], object] | None = None,
        writer_process: bool | None = None,
    ) -> None:
        """Creates an idle logger (its thread starts with the first logged call).

        Args:
            config: The repository (the log goes under its offline store).
            flush_interval: Seconds between writes; default `config.feature_log_flush_seconds`.
            queue_calls: Most calls waiting to be written; default
                `config.feature_log_queue_calls`.
            flush_calls: Write early once this many calls are queued.
            write: Replaces the file writer (benchmarks and tests of a slow disk); the
                calls are then decoded and written in this process.
            writer_process: Decode and write in a writer process (default: unless
                `write` is given).

        """
        self.config = config
        self.flush_interval = (
            config.feature_log_flush_seconds if flush_interval is None else flush_interval
        )
        self.max_calls = config.feature_log_queue_calls if queue_calls is None else queue_calls
        self.flush_calls = flush_calls
        self._write = write or write_log_file
        use_process = write is None if writer_process is None else writer_process
        self._process: WriterProcess | None = WriterProcess() if use_process else None
        self._process_failures = 0
        self._flush_lock = threading.Lock()
        #: Sample rate per logged service (read on the request path).
        self.rates: dict[str, float] = {}
        self._services: dict[str, _Service] = {}
        self._queue: collections.deque[_Queued] = collections.deque()
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._random = random.random
        self._prefix = f"{os.urandom(4).hex()}{os.getpid():x}-"
        self._ids = count(1)
        self.dropped = 0

    # -- registry ------------------------------------------------------------------

    def load(self, registry: registry_pb2.Registry) -> None:
        """Takes the sample rates and plans of a registry version (a registry listener)."""
        services: dict[str, _Service] = {}
        for service in registry.feature_services:
            rate = service.logging.sample_rate if service.HasField("logging") else 0.0
            if rate <= 0:
                continue
            try:
                plan = resolve_feature_service(registry, service.name, full_feature_names=True)
            except SkewlessError:
                continue  # the service cannot be served either
            old = self._services.get(service.name)
            plans = dict(old.plans) if old is not None else {}
            plans[registry.version] = plan
            for version in sorted(plans)[:-4]:  # calls in flight use a recent version
                del plans[version]
            services[service.name] = _Service(rate=min(rate, 1.0), plans=plans)
        with self._lock:
            self._services = services
        self.rates = {name: s.rate for name, s in services.items()}

    # -- the request path --------------------------------------------------------------

    def sampled(self, service: str) -> bool:
        """Whether to log this call of `service` (False when its logging is off)."""
        rate = self.rates.get(service)
        return rate is not None and (rate >= 1.0 or self._random() < rate)

    def offer(
        self,
        service: str,
        request: online_service_pb2.GetOnlineFeaturesRequest,
        response: bytes,
        *,
        request_time_us: int,
        registry_version: int,
        request_id: str | None = None,
        request_bytes: bytes = b"",
    ) -> str:
        """Queues a sampled call (or drops and counts it when full); returns its request id.

        `request_bytes`, the request as received, spares serializing it again.
        """
        if request_id is None or not request_id or len(request_id) > _MAX_CALLER_ID:
            request_id = f"{self._prefix}{next(self._ids):x}"
        queue = self._queue
        if len(queue) >= self.max_calls:
            self.dropped += 1
            columns = list(request.entities.values())
            DROPPED_ROWS.labels(service).inc(len(columns[0].values) if columns else 0)
            return request_id
        # A plain tuple: the cheapest object to build here (the writer makes LoggedCalls).
        queue.append(
            (
                service,
                request,
                response,
                request_time_us,
                request_id,
                registry_version,
                request_bytes,
            )
        )
        if self._thread is None:
            self._start()
        elif len(queue) >= self.flush_calls:
            self._wake.set()
        return request_id

    # -- the writer ------------------------------------------------------------------

    def _start(self) -> None:
        with self._lock:
            if self._thread is None and not self._stopping:
                self._thread = threading.Thread(
                    target=self._run, name="skewless-feature-log", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        if self._process is not None:
            try:  # started now: ready by a later flush (the first ones are written here)
                self._process.start()
            except OSError as exc:
                _log.warning("no feature log writer process (%s): writing in the server", exc)
                self._process = None
        while True:
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            stopping = self._stopping
            self.flush()
            if stopping:
                return

    def flush(self) -> int:
        """Decodes and writes every queued call now; returns the rows written."""
        with self._flush_lock:
            return self._flush()

    def _flush(self) -> int:
        queue = self._queue
        taken: dict[tuple[str, int], list[_Queued]] = {}
        for _ in range(len(queue)):
            item = queue.popleft()
            taken.setdefault((item[0], item[5]), []).append(item)
        if not taken:
            return 0
        with self._lock:
            services = self._services
        plans: dict[tuple[str, int], FeaturePlan] = {}
        for service, version in taken:
            entry = services.get(service)
            plan = entry.plans.get(version) if entry is not None else None
            if plan is None and entry is not None and entry.plans:
                plan = entry.plans[max(entry.plans)]
            if plan is not None:  # else logging was turned off since: not kept
                plans[(service, version)] = plan
        rows, failed = self._write_elsewhere(plans, taken)
        for service, written in rows.items():
            LOGGED_ROWS.labels(service).inc(written)
        for service in failed:
            WRITE_ERRORS.labels(service).inc()
        return sum(rows.values())

    def _write_elsewhere(
        self, plans: dict[tuple[str, int], FeaturePlan], taken: dict[tuple[str, int], list[_Queued]]
    ) -> WriteResult:
        process = self._process
        if process is None:
            return self._write_here(plans, taken)
        sent: list[SentCall] = [
            (service, version, raw or request.SerializeToString(), response, micros, rid)
            for key in plans
            for service, request, response, micros, rid, version, raw in taken[key]
        ]
        try:
            result = process.write(self.config, plans, sent)
            if result is None:  # still starting
                return self._write_here(plans, taken)
        except (WriterGoneError, OSError) as exc:
            self._process_failures += 1
            if self._process_failures >= 3 or isinstance(exc, OSError):
                self._process = None
                process.close()
            _log.warning(
                "the feature log writer process failed (%s); this flush is written in the "
                "server process%s",
                exc,
                " from now on" if self._process is None else "",
            )
            return self._write_here(plans, taken)
        self._process_failures = 0
        return result

    def _write_here(
        self, plans: dict[tuple[str, int], FeaturePlan], taken: dict[tuple[str, int], list[_Queued]]
    ) -> WriteResult:
        rows: dict[str, int] = {}
        failed: dict[str, tuple[int, str]] = {}
        for (service, version), plan in plans.items():
            calls = [
                LoggedCall(request, response, micros, rid, version)
                for _, request, response, micros, rid, version, _ in taken[(service, version)]
            ]
            try:
                table = decode_calls(plan, calls)
                self._write(self.config, service, table)
            except Exception as exc:
                _log.exception("could not write %d logged call(s) of %s", len(calls), service)
                failed[service] = (len(calls), str(exc)[:200])
                continue
            rows[service] = rows.get(service, 0) + table.num_rows
        return rows, failed

    def close(self, timeout: float = 30.0) -> None:
        """Writes everything queued and stops the writer (the SIGTERM path)."""
        with self._lock:
            self._stopping = True
            thread = self._thread
        if thread is None:
            self.flush()
            if self._process is not None:
                self._process.close(timeout)
            return
        self._wake.set()
        deadline = time.monotonic() + timeout
        thread.join(max(0.0, deadline - time.monotonic()))
        if self._queue:  # calls handed off while the thread was finishing
            self.flush()
        if self._process is not None:
            self._process.close(max(1.0, deadline - time.monotonic()))
