"""Freed C heap memory goes back to the system after large work (skewless.core.heap)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from skewless.core import heap

# Fills the heap below its top with chunks the allocator keeps after they are freed
# (a large free first raises glibc's mmap threshold, as big Arrow/DuckDB buffers do),
# then frees all but the last chunk, which pins the heap's top.
_SCRIPT = r"""
import ctypes, ctypes.util, sys
from skewless.core import heap

libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]

def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024

big = libc.malloc(16 << 20); libc.memset(big, 1, 16 << 20); libc.free(big)
chunks = []
for _ in range(100):
    p = libc.malloc(2 << 20)
    libc.memset(p, 1, 2 << 20)
    chunks.append(p)
for p in chunks[:-1]:
    libc.free(p)
before = rss()
released = heap.release_free_memory()
after = rss()
print(released, before, after)
"""


@pytest.mark.skipif(heap._trim is None, reason="the C library has no malloc_trim")
def test_freed_heap_pages_go_back_to_the_system() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _SCRIPT], capture_output=True, text=True, check=True
    ).stdout.split()
    released, before, after = out[0] == "True", int(out[1]), int(out[2])
    assert released
    assert before - after > 100 << 20  # most of the ~200 MB freed is no longer resident


def test_releasing_soon_coalesces_and_returns_at_once() -> None:
    for _ in range(1000):
        heap.release_free_memory_soon()  # never blocks, never piles up work
    assert heap._pending.acquire(timeout=5)  # the one pending release has run
    heap._pending.release()
