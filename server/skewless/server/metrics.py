"""Prometheus metrics of the server, exposed on `server.metrics_port` (default 9464).

Metrics (all prefixed `skewless_`):
- `requests_total{rpc, feature_service, code}`: finished calls by status code name (every
  RPC of every skewless service, recorded once at the boundary in `skewless.server.rpc`);
- `request_latency_seconds{rpc, feature_service}`: histogram of handler time;
- `redis_roundtrip_seconds`: histogram of the one pipelined Redis round trip of a read;
- `errors_total{rpc, code}`: failed calls by status code name.

`feature_service` is empty for requests naming features one by one and for unknown
services (so that clients cannot create label values). With
`skewless serve --workers N`, worker i serves metrics on `metrics_port + i`.
"""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, start_http_server

__all__ = [
    "ERRORS",
    "REDIS_ROUNDTRIP",
    "REQUESTS",
    "REQUEST_LATENCY",
    "observe_request",
    "start_metrics_server",
]

# Sub-millisecond resolution: online reads are expected well under a millisecond.
_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.00075,
    0.001,
    0.0015,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)

REQUESTS = Counter(
    "skewless_requests_total",
    "Finished RPCs by method, feature service and status code.",
    ["rpc", "feature_service", "code"],
)
REQUEST_LATENCY = Histogram(
    "skewless_request_latency_seconds",
    "Handler time of RPCs by method and feature service.",
    ["rpc", "feature_service"],
    buckets=_BUCKETS,
)
REDIS_ROUNDTRIP = Histogram(
    "skewless_redis_roundtrip_seconds",
    "Time of the one pipelined Redis round trip of an online read.",
    buckets=_BUCKETS,
)
ERRORS = Counter(
    "skewless_errors_total",
    "Failed RPCs by method and status code.",
    ["rpc", "code"],
)

_children: dict[tuple[str, str, str], tuple[Counter, Histogram]] = {}


def observe_request(rpc: str, feature_service: str, code: str, seconds: float) -> None:
    """Records one finished call (count, latency and, if it failed, the error)."""
    key = (rpc, feature_service, code)
    children = _children.get(key)
    if children is None:
        children = _children[key] = (
            REQUESTS.labels(rpc, feature_service, code),
            REQUEST_LATENCY.labels(rpc, feature_service),
        )
    count, latency = children
    count.inc()
    latency.observe(seconds)
    if code != "OK":
        ERRORS.labels(rpc, code).inc()


def start_metrics_server(
    port: int, *, host: str = "127.0.0.1", registry: CollectorRegistry = REGISTRY
) -> int:
    """Serves `/metrics` over HTTP in a background thread.

    Args:
        port: TCP port; 0 picks a free one.
        host: Address to bind.
        registry: The collector registry to expose.

    Returns:
        The bound port.

    """
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return int(server.server_port)
