"""The exit codes of every `skewless` command."""

from __future__ import annotations

__all__ = ["EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE"]

#: The command did what was asked.
EXIT_OK = 0
#: The command ran, but its work failed (a job failed, a search found nothing).
EXIT_FAILED = 1
#: Bad arguments or an unusable repository; nothing was done.
EXIT_USAGE = 2
#: Interrupted (Ctrl-C).
EXIT_INTERRUPTED = 130
