"""The Spark session of the Spark offline engine (`offline.engine: spark`), one per process.

PySpark is an optional dependency (`pip install 'skewless[spark]'`): it is imported only
here and in `skewless.offline.spark_join`, when a Spark session is first needed, so
skewless imports and runs on DuckDB without it.

Two ways to reach Spark (`skewless.core.config.SparkSettings`):

* `remote: sc://HOST:PORT`: a Spark Connect client, the way to an existing cluster.
  Its retries are bounded (a few seconds), so a cluster that is down answers
  UNAVAILABLE instead of holding the call for the client's ten minutes of back-off.
* `master` (`local[2]`, `spark://...`): a classic session started in this process.
  Spark's Python workers run `python` (default: this server's interpreter, which has
  pyarrow and polars), set as `PYSPARK_PYTHON` from the configuration, never from
  the user's shell: a worker on another interpreter fails with "No module named
  'pyarrow'".

The session's time zone is UTC unless the configuration says otherwise (results are
converted to UTC either way; the setting keeps Spark's own messages in UTC). A `local`
master binds loopback only unless `spark.driver.bindAddress` / `spark.driver.host` say
otherwise.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from typing import Any

from skewless.core.config import SparkSettings
from skewless.core.errors import FailedPreconditionError
from skewless.offline.spark_errors import spark_failure

__all__ = ["SPARK_EXTRA", "spark_session", "stop_spark_sessions"]

#: How to install PySpark with skewless.
SPARK_EXTRA = "pip install 'skewless[spark]'"
#: Retries of a Spark Connect call before it fails (the client's default waits ~10 min).
_CONNECT_RETRIES = 3
_CONNECT_MAX_BACKOFF_MS = 2_000

_lock = threading.Lock()
_sessions: dict[SparkSettings, Any] = {}


def _require_pyspark() -> None:
    try:
        import pyspark  # noqa: F401
    except ImportError as exc:
        raise FailedPreconditionError(
            f"offline.engine is spark but PySpark is not installed: {SPARK_EXTRA}",
            reason="SPARK_NOT_INSTALLED",
        ) from exc


def _connect_session(settings: SparkSettings) -> Any:
    from pyspark.sql.connect.client.retries import DefaultPolicy
    from pyspark.sql.connect.session import SparkSession as ConnectSession

    assert settings.remote is not None
    builder = ConnectSession.builder.remote(settings.remote)
    session = builder.create()
    session.client.set_retry_policies(
        [DefaultPolicy(max_retries=_CONNECT_RETRIES, max_backoff=_CONNECT_MAX_BACKOFF_MS)]
    )
    conf = dict(settings.conf)
    conf.setdefault("spark.sql.session.timeZone", "UTC")
    for key, value in conf.items():
        session.conf.set(key, value)
    return session


def _local_session(settings: SparkSettings) -> Any:
    from pyspark.sql import SparkSession

    os.environ["PYSPARK_PYTHON"] = settings.python or sys.executable
    master = settings.master or "local[*]"
    builder = SparkSession.builder.master(master).appName("skewless")
    conf = dict(settings.conf)
    conf.setdefault("spark.sql.session.timeZone", "UTC")
    if master.startswith("local"):
        # A session inside this process needs no address but loopback.
        conf.setdefault("spark.driver.bindAddress", "127.0.0.1")
        conf.setdefault("spark.driver.host", "127.0.0.1")
    for key, value in conf.items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


def spark_session(settings: SparkSettings) -> Any:
    """The process's Spark session for these settings, started on first use.

    Raises:
        FailedPreconditionError: `SPARK_NOT_INSTALLED`: PySpark is missing.
        StoreUnavailableError: `SPARK_UNAVAILABLE`: Spark cannot be reached or started.

    """
    with _lock:
        session = _sessions.get(settings)
        if session is not None:
            return session
        _require_pyspark()
        try:
            session = (
                _connect_session(settings)
                if settings.remote is not None
                else _local_session(settings)
            )
        except Exception as exc:
            raise spark_failure(exc, settings.target) from None
        _sessions[settings] = session
        return session


def stop_spark_sessions() -> None:
    """Stops every session this process started (Connect sessions are only closed)."""
    with _lock:
        sessions = list(_sessions.values())
        _sessions.clear()
    for session in sessions:
        with contextlib.suppress(Exception):  # best effort at shutdown
            session.stop()
