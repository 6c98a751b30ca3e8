"""Typed errors for unreadable input.

Every message is written for a clinician: it says what is wrong with the file and what to do,
never a stack trace. The UI shows ``str(error)``; ``error.kind`` is a short machine tag.
"""

from __future__ import annotations


class ImageReadError(Exception):
    """The input cannot be used as a chest CT scan or image."""

    kind = "unreadable"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotAnImageError(ImageReadError):
    """The bytes are not any image format we read (random data, text, a document)."""

    kind = "not-an-image"


class CorruptImageError(ImageReadError):
    """The file claims a known format but is truncated or damaged."""

    kind = "corrupt"


class NoPixelDataError(ImageReadError):
    """A DICOM object that holds no image (a report, a presentation state, a header only)."""

    kind = "no-pixel-data"


class UnsupportedEncodingError(ImageReadError):
    """Pixel data compressed in a way no installed decoder can read."""

    kind = "unsupported-encoding"


class NotCTError(ImageReadError):
    """A readable image that is not a CT (MR, ultrasound, secondary capture, ...)."""

    kind = "not-ct"


class UnsupportedDimensionsError(ImageReadError):
    """Shape we cannot treat as a stack of 2-D slices: 4-D, 1-pixel, a single line."""

    kind = "bad-dimensions"


class ImageTooLargeError(ImageReadError):
    """The image or volume is larger than the limits that keep the app responsive."""

    kind = "too-large"


class EmptyArchiveError(ImageReadError):
    """A zip or folder without any image in it."""

    kind = "empty-archive"


class MixedSeriesError(ImageReadError):
    """A zip or folder holding more than one CT series; we read one at a time."""

    kind = "mixed-series"


class UnsafeArchiveError(ImageReadError):
    """An archive that tries to escape its folder, links elsewhere, nests too deep or expands absurdly."""

    kind = "unsafe-archive"


class ImplausibleScanError(ImageReadError):
    """Read without error but physically impossible: non-finite values, HU no scanner records, bad spacing."""

    kind = "implausible"
