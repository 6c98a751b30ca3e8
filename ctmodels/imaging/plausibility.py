"""Is a scan that was read without error also physically possible? Checked once for every reader.

A file can decode cleanly and still be nonsense: a float TIFF holding infinities, a rescale slope of
1e30, a pixel spacing of −0.7 or 1e30 mm. Measured on such a scan, involvement and verdicts would
look like results, so it is refused with what is wrong, in the user's words.
"""

from __future__ import annotations

import math

from .errors import ImplausibleScanError
from .volume import Volume

#: Hounsfield units a CT scanner can record (16-bit signed storage; extended scales for metal stay inside).
HU_RANGE = (-32768.0, 32767.0)
#: Largest magnitude of an intensity (non-HU) image: 8- and 16-bit pictures stay below 65,536 and float exports
#: near 0..1 or in HU; values of 1e18 or 3e38 are an integer or float type's extremes, not a picture.
INTENSITY_LIMIT = 1e6
#: Pixel and slice spacing of any CT, in millimetres (generous on both ends).
SPACING_RANGE_MM = (0.01, 100.0)


def non_finite() -> ImplausibleScanError:
    """The error for NaN or infinite values (readers that would rescale them raise it before they do)."""
    return ImplausibleScanError(
        "The image holds values that are not numbers (NaN or infinity), so nothing in it can be measured. "
        "Export the scan again from the scanner or viewer."
    )


def check_plausible(vol: Volume) -> Volume:
    """``vol`` unchanged when it could come from a scanner; else :class:`ImplausibleScanError`."""
    lo, hi = float(vol.array.min()), float(vol.array.max())  # a NaN or an infinity shows here, no copy
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise non_finite()
    if vol.is_hu and (lo < HU_RANGE[0] or hi > HU_RANGE[1]):
        raise ImplausibleScanError(
            f"The scan's values run from {lo:.3g} to {hi:.3g} Hounsfield units; a CT scanner records "
            f"{HU_RANGE[0]:.0f} to {HU_RANGE[1]:.0f}. The file's rescale slope or intercept is probably wrong."
        )
    if not vol.is_hu and max(abs(lo), abs(hi)) > INTENSITY_LIMIT:
        raise ImplausibleScanError(
            f"The image's values run from {lo:.3g} to {hi:.3g}; no CT or picture stores intensities beyond "
            f"±{INTENSITY_LIMIT:,.0f} (these are a number type's extremes, not an image). The export is broken: "
            "export the scan again."
        )
    if vol.spacing is not None:
        bad = [s for s in vol.spacing if not (math.isfinite(s) and SPACING_RANGE_MM[0] <= s <= SPACING_RANGE_MM[1])]
        if bad:
            shown = " × ".join(f"{s:.3g}" for s in vol.spacing)
            raise ImplausibleScanError(
                f"The file gives a voxel spacing of {shown} mm; spacings must be positive and at most "
                f"{SPACING_RANGE_MM[1]:.0f} mm. The header is damaged or was written wrongly."
            )
    return vol
