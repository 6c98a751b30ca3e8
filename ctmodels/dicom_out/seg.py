"""The DICOM SEG of an assessment: the lung field, the classical lesion mask (HU band) and each lesion-head model's
learned lesion, slice for slice on the source series' grid, referencing its images."""

from __future__ import annotations

from typing import Sequence

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from ..assessment import Assessment
from ..inference import lesion_maps_on_slices
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


#: A learned lesion map becomes a mask where P(lesion) reaches this (the page's orange overlay), inside the lung.
LEARNED_CUT = 0.5


def learned_label(model_name: str) -> str:
    return f"Lesion, learned by {model_name}"[:64]


def seg_masks(assessment: Assessment) -> dict[str, np.ndarray]:
    """The masks the SEG holds, by segment label: bool (slices, rows, cols) on the volume's grid. The lung field,
    the classical lesion (HU scans), and per model with a lesion head its learned lesion (P(lesion) ≥ 0.5 inside
    the lung field) on the slices it scores."""
    if assessment.lung is None:
        raise ValueError("This scan has no lung field, so there is nothing to segment.")
    lung = np.asarray(assessment.lung, bool)
    masks = {LUNG_LABEL: lung}
    if assessment.classical is not None:
        c = assessment.classical
        masks[LESION_LABEL] = np.stack([c.lesion_slice(i) for i in range(assessment.n_slices)])
    for m in assessment.models:
        maps = lesion_maps_on_slices(m.prediction, lung.shape[1:])  # as the assessment scored them
        if maps is not None:
            scored = m.prediction.slices
            mask = np.zeros_like(lung)
            mask[scored] = (maps >= LEARNED_CUT) & lung[scored]
            masks[learned_label(m.name)] = mask
    return masks


def write_seg(assessment: Assessment, sources: Sequence[Dataset]) -> bytes:
    """A binary DICOM SEG (one frame per slice and segment) referencing ``sources`` (the assessed series'
    headers, one per slice in the volume's order)."""
    sources = prepared_sources(sources, assessment.n_slices)
    masks = seg_masks(assessment)
    classical = hd.AlgorithmIdentificationSequence(
        name=f"{MANUFACTURER} classical HU segmentation", family=codes.cid7162.HistogramAnalysis,
        version=SOFTWARE_VERSION)
    algorithms = {learned_label(m.name): hd.AlgorithmIdentificationSequence(
        name=f"{MANUFACTURER} {m.name} ({m.key})"[:64], family=codes.cid7162.ArtificialIntelligence,
        version=m.model.ckpt_id) for m in assessment.models}
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=n, segment_label=label,
            segmented_property_category=(codes.SCT.AnatomicalStructure if label == LUNG_LABEL
                                         else codes.SCT.MorphologicallyAbnormalStructure),
            segmented_property_type=codes.SCT.Lung if label == LUNG_LABEL else codes.SCT.Lesion,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithms.get(label, classical), tracking_uid=generate_uid(), tracking_id=label)
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
