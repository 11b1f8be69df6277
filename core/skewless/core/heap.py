"""Giving freed heap memory back to the operating system after large work.

A historical retrieval or a materialization job allocates and frees hundreds of
megabytes through the C allocator (DuckDB, Arrow's system pool, NumPy). glibc keeps
freed chunks below the top of its heaps, and raises its mmap threshold after large
frees, so a long-running server's resident size creeps up after each large call even
though nothing is held. `malloc_trim(0)` returns those free pages; it is called after
such work ends, off the request path (one background thread, calls coalesced).
Elsewhere than glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

__all__ = ["release_free_memory", "release_free_memory_soon"]


def _load_trim() -> Any:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


_trim = _load_trim()
_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="skewless-heap")
_pending = threading.Lock()


def release_free_memory() -> bool:
    """Returns the C heap's free pages to the system now; whether any were returned."""
    if _trim is None:
        return False
    return bool(_trim(0))


def _release_pending() -> None:
    try:
        release_free_memory()
    finally:
        _pending.release()


def release_free_memory_soon() -> None:
    """`release_free_memory` in the background; a no-op while one is already pending."""
    if _trim is None or not _pending.acquire(blocking=False):
        return
    try:
        _pool.submit(_release_pending)
    except RuntimeError:  # interpreter shutting down
        _pending.release()
