"""Results as DICOM, filed under the source study: a Comprehensive 3D SR (TID 1500 measurement report) of every
model's verdict and the involvement, and a SEG of the lung field and the lesion mask. Both read an
``Assessment`` (``ctmodels.assessment``) and the source series' headers (``imaging.dicom.series_source_images``).

Privacy: a result must carry the study's patient and study identifiers to be filed under it; highdicom copies
them from the source headers inside the writer, in memory. The bytes go to the user's download or the PACS
(``ctmodels.pacs``), never to a log, the workspace or the screen.
"""

from __future__ import annotations

from .seg import write_seg
from .sr import write_sr

__all__ = ["write_seg", "write_sr"]
