"""The server's whole-scan slots: reading an upload, segmenting its lungs and scoring every slice hold one.

Each holds about two volumes' worth of temporaries, so five radiologists uploading a series together would
stack five transient peaks; a small pool keeps the peak bounded while sessions overlap. The pool size is
measured, not guessed (``docs/performance.md``): five browsers uploading P002 at once on 2 cores peaked at
2.35-2.46 GB with one slot and at 2.57 GB with two (the e2e test's bound is 2.5 GB; then the tiny eager set), so
one slot is the default; the whole-scan work inside it uses both cores already (threads, models side by side).
``CTSS_SCAN_SLOTS`` sets more where memory allows.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import threading
from collections.abc import Iterator

#: Whole-scan jobs that may run at once in one server.
SLOTS = max(1, int(os.environ.get("CTSS_SCAN_SLOTS", "1")))
_SLOTS = threading.BoundedSemaphore(SLOTS)


def _libc() -> ctypes.CDLL | None:
    """glibc, or None off glibc. Opened by its fixed name: ``ctypes.util.find_library`` would run ldconfig at every
    server start."""
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


_LIBC = _libc()
_M_MMAP_THRESHOLD, _M_ARENA_MAX = -3, -8  # mallopt parameters (malloc.h)
#: Allocations of at least this many bytes get their own mapping, handed back to the system when freed.
MMAP_THRESHOLD = 2 << 20


def tune_allocator() -> None:
    """The server's allocator, set once by ``app.py`` at start, not at import (tests and benchmarks keep glibc's
    defaults; ``MALLOC_ARENA_MAX`` / ``MALLOC_MMAP_THRESHOLD_`` in the
    environment still win). Each session's script runs in its own thread, and glibc gave each thread its own heap
    arena (up to 8 per core) whose freed whole-scan temporaries stayed mapped; and glibc's default threshold for
    giving a large block its own mapping rises to the largest block freed, so volumes and score batches came from
    those heaps too. Two arenas and a fixed 2 MB threshold (with the lung field kept as bits): five browsers scoring
    P002 at once peaked at 2.39-2.47 GB instead of 2.76-3.01 GB (``tests/e2e/test_sessions_memory.py``, the real-CT
    set on ONNX Runtime), and no slower."""
    if _LIBC is None:
        return
    if "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        _LIBC.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    if "MALLOC_ARENA_MAX" not in os.environ:
        _LIBC.mallopt(_M_ARENA_MAX, 2)


def _release_freed() -> None:
    """Hand the freed heap memory of every arena back to the system (glibc's ``malloc_trim``)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


@contextlib.contextmanager
def whole_scan_work() -> Iterator[None]:
    """Hold one of the server's whole-scan slots (others wait; the page shows its spinner meanwhile);
    afterwards hand the work's freed temporaries back to the system."""
    try:
        with _SLOTS:
            yield
    finally:
        _release_freed()
