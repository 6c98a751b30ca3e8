"""The server's whole-scan slots: reading an upload, segmenting its lungs and scoring every slice hold one.

Each holds about two volumes' worth of temporaries, so five radiologists uploading a series together would
stack five transient peaks; a small pool keeps the peak bounded while sessions overlap. The pool size is
measured, not guessed (``docs/performance.md``): five browsers uploading P002 at once on 2 cores peaked at
2.35-2.46 GB with one slot and at 2.57 GB with two (the e2e test's bound is 2.5 GB), so one slot is the
default; the whole-scan work inside it uses both cores already (threads, models side by side).
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


def _libc_trim():
    """glibc's ``malloc_trim``, or None off glibc. Each session runs in its own thread with its own malloc
    arena; the per-slice temporaries of whole-scan work (about 1 MB each, under glibc's mmap threshold) stay
    mapped in those arenas after they are freed unless trimmed, so the server's memory only ever grew.
    Opened by glibc's fixed name: ``ctypes.util.find_library`` would run ldconfig at every server start."""
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


_TRIM = _libc_trim()


@contextlib.contextmanager
def whole_scan_work() -> Iterator[None]:
    """Hold one of the server's whole-scan slots (others wait; the page shows its spinner meanwhile);
    afterwards hand the work's freed temporaries back to the system."""
    try:
        with _SLOTS:
            yield
    finally:
        if _TRIM is not None:
            _TRIM(0)
