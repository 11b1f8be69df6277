"""A real Spark Connect server for tests, started from the installed PySpark on loopback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.helpers.processes import stop_process

__all__ = ["SparkConnectServer", "free_port", "running_connect_server"]

_SERVER_CLASS = "org.apache.spark.sql.connect.service.SparkConnectServer"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class SparkConnectServer:
    """A running Spark Connect server."""

    port: int
    pid: int

    @property
    def url(self) -> str:
        return f"sc://127.0.0.1:{self.port}"


@contextmanager
def running_connect_server(log_dir: Path, timeout: float = 240.0) -> Iterator[SparkConnectServer]:
    """Starts `SparkConnectServer` (local[2], loopback, free port) until the block ends.

    Its Python workers run this interpreter (the test environment has pyarrow and polars).
    """
    import pyspark

    home = Path(pyspark.__file__).parent
    port = free_port()
    log = (log_dir / "spark-connect.log").open("w")
    env = {**os.environ, "SPARK_HOME": str(home), "PYSPARK_PYTHON": sys.executable}
    env.pop("SPARK_CONNECT_MODE_ENABLED", None)
    cmd = [
        str(home / "bin" / "spark-submit"),
        "--master",
        "local[2]",
        "--class",
        _SERVER_CLASS,
        "--driver-memory",
        "1g",
        "--conf",
        f"spark.connect.grpc.binding.port={port}",
        "--conf",
        "spark.connect.grpc.binding.address=127.0.0.1",
        "--conf",
        "spark.driver.bindAddress=127.0.0.1",
        "--conf",
        "spark.driver.host=127.0.0.1",
        "--conf",
        "spark.ui.enabled=false",
        "--conf",
        "spark.sql.shuffle.partitions=2",
        "--conf",
        f"spark.local.dir={log_dir}",
        "spark-internal",
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=log_dir)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"the Spark Connect server exited with {proc.returncode}: see {log.name}"
                )
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"the Spark Connect server did not start: see {log.name}"
                    ) from None
                time.sleep(0.25)
        yield SparkConnectServer(port=port, pid=proc.pid)
    finally:
        stop_process(proc, timeout=20)
        log.close()
