"""The two guards every DICOM step runs under: pydicom kept from logging tag values (names, IDs), and
its many exception types turned into the app's typed errors a clinician can read."""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Iterator

from pydicom import config as pydicom_config

from ..errors import CorruptImageError, ImageReadError, ImageTooLargeError

logger = logging.getLogger(__name__)

# pydicom quietening: with validation on, pydicom logs offending tag VALUES (UIDs, names) as
# warnings. We switch validation off while our readers run (reference-counted, so concurrent
# readers in Streamlit's threads do not restore it under each other's feet).
_quiet_lock = threading.Lock()
_quiet_depth = 0
_saved_mode: int | None = None


@contextlib.contextmanager
def quiet_pydicom() -> Iterator[None]:
    """Run pydicom without value validation, so no tag value reaches the logs."""
    global _quiet_depth, _saved_mode
    with _quiet_lock:
        if _quiet_depth == 0:
            _saved_mode = pydicom_config.settings.reading_validation_mode
            pydicom_config.settings.reading_validation_mode = pydicom_config.IGNORE
        _quiet_depth += 1
    try:
        yield
    finally:
        with _quiet_lock:
            _quiet_depth -= 1
            if _quiet_depth == 0 and _saved_mode is not None:
                pydicom_config.settings.reading_validation_mode = _saved_mode


@contextlib.contextmanager
def _as_corrupt(message: str) -> Iterator[None]:
    """Turn any library exception into a readable CorruptImageError (typed errors pass through)."""
    try:
        yield
    except ImageReadError:
        raise
    except MemoryError as exc:
        raise ImageTooLargeError("The scan is too large to load into memory.") from exc
    except Exception as exc:  # pydicom raises many types on damaged input
        logger.info("DICOM read failed (%s)", type(exc).__name__)
        raise CorruptImageError(message) from exc
