"""The feature log's writer process: decoding and Parquet writes off the server's GIL.

Decoding logged calls is CPU work in Python and protobuf: done in the serving process it
holds the GIL that the event loop needs. The `FeatureLogger` of each server process
(each worker of `--workers N`) therefore starts one writer process of its own
(`python -m skewless.server.log_writer`) and, at every flush, sends it the calls taken
from its queue over a pipe; the writer decodes them
(`skewless.offline.feature_log.decode_calls`), writes the files and answers with the
rows written per service, before the logger sends the next flush. The logger's queue
stays the only buffer: a writer that falls behind makes the queue fill and drop (counted),
never the request path wait.

Frames, both ways: an 8-byte little-endian length, then a pickle.

* logger to writer: `("calls", [(service, version, request size, response size,
  request time µs, request id), ...])` followed by one frame of those requests' and
  responses' bytes back to back (no pickling of the bulk), any number, then
  `("write", config, plans)` with the `FeaturePlan` of each (service, version);
* writer to logger: `("ready",)` once imported (until then the logger writes its
  flushes itself), then after each `write` `("done", {service: rows}, {service: (calls,
  error text)})`.

The writer runs at a lower scheduling priority (`nice` 5), ignores SIGINT and SIGTERM
(the server flushes through it on SIGTERM, then closes the pipe) and exits at the end
of its input: a server killed outright leaves no writer behind.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
from collections.abc import Sequence
from typing import IO, Any

from skewless.core.config import RepoConfig
from skewless.offline.feature_log import LoggedCall, decode_calls, write_log_file
from skewless.registry.feature_refs import FeaturePlan

__all__ = ["WriterGoneError", "WriterProcess", "main"]

_log = logging.getLogger(__name__)
_HEADER = struct.Struct("<Q")
#: How much lower the writer's scheduling priority is than the server's (`nice`): when
#: the machine's CPU is short the server is served first and the logger's queue absorbs
#: the writer's delay (dropping, counted, when full).
_NICENESS = 5
#: Calls per frame sent to the writer (each frame is pickled while holding the GIL).
_FRAME_CALLS = 256

#: A call as sent: service, version, request bytes, response bytes, request time, id.
SentCall = tuple[str, int, bytes, bytes, int, str]
#: What a write returns: rows written per service, and (calls, error) per failed service.
WriteResult = tuple[dict[str, int], dict[str, tuple[int, str]]]


class WriterGoneError(RuntimeError):
    """The writer process exited or its pipe broke (the batch was not confirmed)."""


def _send(sink: IO[bytes], message: object) -> None:
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    sink.write(_HEADER.pack(len(payload)))
    sink.write(payload)


def _send_calls(sink: IO[bytes], calls: Sequence[SentCall]) -> None:
    """One `calls` frame (the small fields pickled), then one frame of the bytes."""
    meta = [(c[0], c[1], len(c[2]), len(c[3]), c[4], c[5]) for c in calls]
    _send(sink, ("calls", meta))
    blob = b"".join([part for c in calls for part in (c[2], c[3])])
    sink.write(_HEADER.pack(len(blob)))
    sink.write(blob)


def _receive_calls(
    source: IO[bytes], meta: list[tuple[str, int, int, int, int, str]]
) -> list[SentCall]:
    header = source.read(_HEADER.size)
    (size,) = _HEADER.unpack(header)
    blob = source.read(size)
    if len(blob) < size:
        raise EOFError("the calls' bytes ended early")
    out: list[SentCall] = []
    at = 0
    for service, version, request_size, response_size, request_time_us, request_id in meta:
        request = blob[at : at + request_size]
        at += request_size
        response = blob[at : at + response_size]
        at += response_size
        out.append((service, version, request, response, request_time_us, request_id))
    return out


def _receive(source: IO[bytes]) -> Any:
    header = source.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    (size,) = _HEADER.unpack(header)
    payload = source.read(size)
    if len(payload) < size:
        return None
    return pickle.loads(payload)  # our own parent process, over a private pipe


class WriterProcess:
    """The server side of one writer process (started on first use, restarted if gone)."""

    def __init__(self) -> None:
        """Creates the handle; `start` starts the process."""
        self._proc: subprocess.Popen[bytes] | None = None
        self._ready = False

    def start(self) -> None:
        """Starts the process unless it runs (it says when it is ready to write).

        Raises:
            OSError: The process could not be started.

        """
        if self._proc is None or self._proc.poll() is not None:
            if self._proc is not None:
                _closed(self._proc)
            self._ready = False
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "skewless.server.log_writer"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            )

    def _is_ready(self, proc: subprocess.Popen[bytes]) -> bool:
        if not self._ready and proc.stdout is not None:
            readable, _, _ = select.select([proc.stdout], [], [], 0)
            if readable:
                if _receive(proc.stdout) != ("ready",):
                    self._reap()
                    raise WriterGoneError("the feature log writer process did not start")
                self._ready = True
        return self._ready

    def write(
        self,
        config: RepoConfig,
        plans: dict[tuple[str, int], FeaturePlan],
        calls: Sequence[SentCall],
    ) -> WriteResult | None:
        """Has the writer decode and write `calls`; returns what it wrote.

        Returns:
            The rows written per service and the failures, or None while the process is
            still starting (the caller writes this batch itself).

        Raises:
            WriterGoneError: The process exited, or did not answer.
            OSError: The process could not be started.

        """
        self.start()
        proc = self._proc
        assert proc is not None
        if not self._is_ready(proc):
            return None
        sink, source = proc.stdin, proc.stdout
        assert sink is not None and source is not None
        try:
            for start in range(0, len(calls), _FRAME_CALLS):
                _send_calls(sink, calls[start : start + _FRAME_CALLS])
            _send(sink, ("write", config, plans))
            sink.flush()
        except (BrokenPipeError, ValueError) as exc:
            self._reap()
            raise WriterGoneError("the feature log writer process is gone") from exc
        answer = _receive(source)
        if answer is None or answer[0] != "done":
            self._reap()
            raise WriterGoneError("the feature log writer process exited before answering")
        return answer[1], answer[2]

    def _reap(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.kill()
            _closed(proc)

    def close(self, timeout: float = 30.0) -> None:
        """Ends the writer's input and waits for it to exit.

        Every write was answered before this: the writer holds nothing. One that is still
        starting is stopped at once.
        """
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if not self._ready:
            proc.kill()
            _closed(proc)
            return
        try:
            if proc.stdin is not None:
                proc.stdin.close()
            proc.wait(timeout)
        except (OSError, subprocess.TimeoutExpired):
            proc.kill()
        _closed(proc)


def _closed(proc: subprocess.Popen[bytes]) -> None:
    proc.wait()
    for pipe in (proc.stdin, proc.stdout):
        if pipe is not None:
            with contextlib.suppress(OSError):  # a broken pipe: nothing left to flush
                pipe.close()


def write_calls(
    config: RepoConfig, plans: dict[tuple[str, int], FeaturePlan], calls: Sequence[SentCall]
) -> WriteResult:
    """Decodes and writes sent calls, one table per service and version."""
    groups: dict[tuple[str, int], list[LoggedCall]] = {}
    for service, version, request, response, request_time_us, request_id in calls:
        # The request stays bytes: the decoder reads its keys from them.
        call = LoggedCall(request, response, request_time_us, request_id, version)
        groups.setdefault((service, version), []).append(call)
    rows: dict[str, int] = {}
    failed: dict[str, tuple[int, str]] = {}
    for (service, version), group in groups.items():
        plan = plans.get((service, version))
        if plan is None:
            continue  # logging was turned off since: the calls are not kept
        try:
            table = decode_calls(plan, group)
            write_log_file(config, service, table)
        except Exception as exc:
            _log.exception("could not write %d logged call(s) of %s", len(group), service)
            seen = failed.get(service, (0, ""))
            failed[service] = (seen[0] + len(group), str(exc)[:200])
            continue
        rows[service] = rows.get(service, 0) + table.num_rows
    return rows, failed


def main() -> None:
    """Runs the writer: frames in on stdin, answers out on stdout, until stdin ends."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with contextlib.suppress(OSError):
        os.nice(_NICENESS)  # when the CPU is short, serving goes first
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    source, sink = sys.stdin.buffer, sys.stdout.buffer
    _send(sink, ("ready",))  # imported: writes from now on cost no start-up
    sink.flush()
    pending: list[SentCall] = []
    while True:
        message = _receive(source)
        if message is None:
            return
        if message[0] == "calls":
            try:
                pending += _receive_calls(source, message[1])
            except (EOFError, struct.error):
                return
        elif message[0] == "write":
            rows, failed = write_calls(message[1], message[2], pending)
            pending = []
            _send(sink, ("done", rows, failed))
            sink.flush()


if __name__ == "__main__":
    main()
