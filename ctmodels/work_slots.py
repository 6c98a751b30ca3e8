"""The server's whole-scan slots: reading an upload, segmenting its lungs and scoring every slice hold one.

Each holds about two volumes' worth of temporaries, so five radiologists uploading a series together would
stack five transient peaks; a small pool keeps the peak bounded while sessions overlap. The pool size is
measured, not guessed (``docs/performance.md``): five browsers uploading P002 at once on 2 cores peaked at
2.35-2.46 GB with one slot and at 2.57 GB with two (the e2e test's bound is 2.5 GB; then the tiny eager set), so
one slot is the default; the whole-scan work inside it uses both cores already (threads, models side by side).
``CTSS_SCAN_SLOTS`` sets more where memory allows (with the real-CT set served, two peaked at 2.65 GB).
Explanations (Grad-CAM) of scans already scored wait while any scan is queued or scoring, so under load every
session gets its verdicts first (``explanation_work``). Also the server's heap settings: the allocator
(``tune_allocator``) and the objects frozen out of Streamlit's collection after each run (``freeze_imported_heap``).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import sys
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
    """The server's allocator, set once by ``app.py`` at start, not at import (tests keep glibc's defaults;
    the as-served benchmark sets it too; ``MALLOC_ARENA_MAX`` / ``MALLOC_MMAP_THRESHOLD_`` in the
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


_modules_at_freeze = 0


def freeze_imported_heap() -> None:
    """After a page run that imported more modules: collect once, then move every object alive into the
    collector's permanent generation (``gc.freeze``). Streamlit collects all generations after each script run
    (``runner.postScriptGC``) with the GIL held; over the ~550 k objects of torch, ONNX Runtime, pandas, plotly
    and the models that took 0.29 s on an idle host, during which every other session's Python stood still.
    Frozen, it takes under 1 ms; objects still die by reference counting, only reference cycles among the
    frozen ones are left to the process (a few, made by the first runs of each page)."""
    global _modules_at_freeze
    if len(sys.modules) > _modules_at_freeze:
        gc.collect()
        gc.freeze()
        _modules_at_freeze = len(sys.modules)


def _release_freed() -> None:
    """Hand the freed heap memory of every arena back to the system (glibc's ``malloc_trim``)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


#: Whole-scan jobs queued for a slot or in one; explanations wait while there are any (``explanation_work``).
_scans = 0
_explanations = 0  # explanations waiting or running
_scans_changed = threading.Condition()
#: The longest an explanation waits for other sessions' scans: a steady stream of uploads must not starve it.
EXPLANATION_MAX_WAIT_S = 30.0


@contextlib.contextmanager
def whole_scan_work() -> Iterator[None]:
    """Hold one of the server's whole-scan slots (others wait; the page shows its spinner meanwhile);
    afterwards hand the work's freed temporaries back to the system."""
    global _scans
    with _scans_changed:
        _scans += 1
    try:
        with _SLOTS:
            yield
    finally:
        with _scans_changed:
            _scans -= 1
            _scans_changed.notify_all()
        _release_freed()


def busy() -> bool:
    """Whether any session's whole-scan work or explanation is queued or running (asked before one's own)."""
    return _scans > 0 or _explanations > 0


@contextlib.contextmanager
def explanation_work(max_wait_s: float = EXPLANATION_MAX_WAIT_S) -> Iterator[None]:
    """Explanations (Grad-CAM of the viewed slice) of a scan already scored wait while other sessions' scans are
    queued or scoring, at most ``max_wait_s``: under load every radiologist gets the verdicts first, and the
    explanations follow (five sessions uploading P002 at once: ``docs/performance.md``)."""
    global _explanations
    with _scans_changed:
        _explanations += 1
        _scans_changed.wait_for(lambda: _scans == 0, timeout=max_wait_s)
    try:
        yield
    finally:
        with _scans_changed:
            _explanations -= 1
