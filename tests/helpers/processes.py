"""Stopping the processes tests start: signal, wait, kill if needed, close their pipes."""

from __future__ import annotations

import signal
import subprocess
from typing import Any

__all__ = ["stop_process"]


def stop_process(
    proc: subprocess.Popen[Any], *, sig: int = signal.SIGTERM, timeout: float = 10.0
) -> int:
    """Sends `sig` (if it still runs), waits, SIGKILLs after `timeout`, closes its pipes.

    Returns:
        The exit code.

    """
    try:
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    finally:
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
    return int(proc.returncode)
