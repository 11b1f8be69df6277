"""Spark's failures as skewless errors: a status and a short message, never a JVM trace.

PySpark raises its own exceptions (classic sessions and Spark Connect differ) whose text
carries JVM class names, stack traces and server paths. `spark_failure` keeps what a
person can act on: Spark's error condition (`PATH_NOT_FOUND`, ...) and the first line of
its message, without class names or paths, capped, under one of our statuses:

* Spark cannot be reached or started: UNAVAILABLE (`SPARK_UNAVAILABLE`, retryable);
* out of memory: RESOURCE_EXHAUSTED (`SPARK_OUT_OF_MEMORY`);
* the history files cannot be read (a cluster that does not see the offline store's
  files at the same paths): FAILED_PRECONDITION (`SPARK_CANNOT_READ_HISTORY`);
* Spark's Python workers failed (e.g. a cluster without polars): FAILED_PRECONDITION
  (`SPARK_PYTHON_WORKER_FAILED`);
* any other failed job: UNAVAILABLE (`SPARK_JOB_FAILED`).

This module does not import PySpark: it reads the exception's attributes and text.
"""

from __future__ import annotations

import re

from skewless.core.errors import (
    FailedPreconditionError,
    ResourceExhaustedError,
    SkewlessError,
    StoreUnavailableError,
)

__all__ = ["short_spark_message", "spark_failure"]

_MESSAGE_CHARS = 200
_JVM_CLASS = re.compile(r"\(?\b(?:[a-z_$][\w$]*\.)+[A-Z][\w$]*(?:Exception|Error)\b\)?:?\s*")
_PYTHON_CLASS = re.compile(r"^[A-Za-z_][\w.]*(?:Error|Exception): ")
_URI_PATH = re.compile(r"\b[a-z][a-z0-9+.-]*:/{1,3}[^\s'\",;]+")
_ABSOLUTE_PATH = re.compile(r"(?<![\w.~:/>-])/[\w.@+~%=-]+(?:/[\w.@+~%=*?-]*)*")
_CONDITION = re.compile(r"^\[([A-Z_.]+)\]\s*")
_SQLSTATE = re.compile(r"\s*SQLSTATE: \w+\.?$")
_UNREACHABLE = (
    "Connection refused",
    "failed to connect to all addresses",
    "StatusCode.UNAVAILABLE",
    "Py4JNetworkError",
    "Java gateway process exited",
    "Cannot run program",
)
_OUT_OF_MEMORY = ("OutOfMemoryError", "SparkOutOfMemoryError", "UNABLE_TO_ACQUIRE_MEMORY")
_UNREADABLE = (
    "PATH_NOT_FOUND",
    "FAILED_READ_FILE",
    "FileNotFoundException",
    "CANNOT_READ_FILE_FOOTER",
)


def _condition(exc: BaseException) -> str | None:
    for name in ("getCondition", "getErrorClass"):
        method = getattr(exc, name, None)
        if callable(method):
            try:
                value = method()
            except Exception:  # some exceptions cannot say
                continue
            if isinstance(value, str) and value:
                return value
    return None


def short_spark_message(exc: BaseException) -> str:
    """The first line of a Spark error without JVM classes, paths or traces, capped."""
    text = str(exc)
    for cut in ("\n\nJVM stacktrace:", "\nJVM stacktrace:"):
        text = text.split(cut, 1)[0]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if "Traceback (most recent call last)" in text:
        # A Python worker's failure: its last line is the exception and its message.
        lines = [lines[-1]] if lines else []
    line = lines[0] if lines else ""
    line = _CONDITION.sub("", line)
    line = _SQLSTATE.sub("", line)
    line = _JVM_CLASS.sub("", line)
    line = _PYTHON_CLASS.sub("", line)
    line = _URI_PATH.sub("<path>", line)
    line = _ABSOLUTE_PATH.sub("<path>", line)
    line = line.strip() or "no detail given"
    return line if len(line) <= _MESSAGE_CHARS else line[: _MESSAGE_CHARS - 3] + "..."


def spark_failure(exc: BaseException, target: str, *, view: str | None = None) -> SkewlessError:
    """Our error for a Spark failure (see the module docstring for the mapping).

    Args:
        exc: What PySpark raised.
        target: Where Spark runs (`SparkSettings.target`), for the message.
        view: The feature view whose history was being joined, if any.

    """
    condition = _condition(exc)
    text = f"{type(exc).__name__} {condition or ''} {str(exc)[:4000]}"
    detail = short_spark_message(exc)
    metadata = {"spark": target}
    if condition:
        metadata["spark_condition"] = condition
    if view is not None:
        metadata["feature_view"] = view
    where = f" for feature view {view!r}" if view is not None else ""
    if any(word in text for word in _UNREACHABLE) and condition is None:
        return StoreUnavailableError(
            f"the Spark engine at {target} cannot be reached or started; check "
            "offline.spark in skewless.yaml and that Spark is up, then retry",
            reason="SPARK_UNAVAILABLE",
            metadata=metadata,
        )
    if any(word in text for word in _OUT_OF_MEMORY):
        return ResourceExhaustedError(
            f"Spark ran out of memory{where}: give its executors more memory or "
            f"request fewer entity rows ({detail})",
            reason="SPARK_OUT_OF_MEMORY",
            metadata=metadata,
        )
    if any(word in text for word in _UNREADABLE):
        return FailedPreconditionError(
            f"Spark cannot read the offline history{where}: its executors must see the "
            f"offline store's files at the paths the server lists ({detail})",
            reason="SPARK_CANNOT_READ_HISTORY",
            metadata=metadata,
        )
    if condition == "PYTHON_EXCEPTION" or "PythonException" in type(exc).__name__:
        return FailedPreconditionError(
            f"Spark's Python workers failed{where}: they need pyarrow, numpy and polars ({detail})",
            reason="SPARK_PYTHON_WORKER_FAILED",
            metadata=metadata,
        )
    return StoreUnavailableError(
        f"the Spark job failed{where}"
        + (f" with {condition}" if condition else "")
        + f": {detail}",
        reason="SPARK_JOB_FAILED",
        metadata=metadata,
    )
