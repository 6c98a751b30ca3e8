"""The DICOM SEG of an assessment: the lung field and the classical lesion mask (HU band), slice for slice on the
source series' grid, referencing its images."""

from __future__ import annotations

from typing import Sequence

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from ..assessment import Assessment
from .device import (
    DEVICE_SERIAL,
    DISCLAIMER,
    MANUFACTURER,
    MODEL_NAME,
    SEG_SERIES_NUMBER,
    SOFTWARE_VERSION,
    as_bytes,
    prepared_sources,
)

#: Segment labels, in segment-number order (a reader of the SEG finds each mask by its label).
LUNG_LABEL = "Lung field"
LESION_LABEL = "Lesion (classical HU band)"


def seg_masks(assessment: Assessment) -> dict[str, np.ndarray]:
    """The masks the SEG holds, by segment label: bool (slices, rows, cols) on the volume's grid."""
    if assessment.lung is None:
        raise ValueError("This scan has no lung field, so there is nothing to segment.")
    masks = {LUNG_LABEL: np.asarray(assessment.lung, bool)}
    if assessment.classical is not None:
        c = assessment.classical
        masks[LESION_LABEL] = np.stack([c.lesion_slice(i) for i in range(assessment.n_slices)])
    return masks


def write_seg(assessment: Assessment, sources: Sequence[Dataset]) -> bytes:
    """A binary DICOM SEG (one frame per slice and segment) referencing ``sources`` (the assessed series'
    headers, one per slice in the volume's order)."""
    sources = prepared_sources(sources, assessment.n_slices)
    masks = seg_masks(assessment)
    algorithm = hd.AlgorithmIdentificationSequence(
        name=f"{MANUFACTURER} classical HU segmentation", family=codes.cid7162.HistogramAnalysis,
        version=SOFTWARE_VERSION)
    kinds = {
        LUNG_LABEL: (codes.SCT.AnatomicalStructure, codes.SCT.Lung),
        LESION_LABEL: (codes.SCT.MorphologicallyAbnormalStructure, codes.SCT.Lesion),
    }
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=n, segment_label=label, segmented_property_category=kinds[label][0],
            segmented_property_type=kinds[label][1], algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm, tracking_uid=generate_uid(), tracking_id=label)
        for n, label in enumerate(masks, start=1)
    ]
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=np.stack(list(masks.values()), axis=-1).astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=generate_uid(),
        series_number=SEG_SERIES_NUMBER,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=MODEL_NAME,
        software_versions=SOFTWARE_VERSION,
        device_serial_number=DEVICE_SERIAL,
        series_description=f"Lung field and lesion ({DISCLAIMER.rstrip('.').lower()})"[:64],
        content_description="CTSS masks"[:16],
    )
    return as_bytes(seg)
