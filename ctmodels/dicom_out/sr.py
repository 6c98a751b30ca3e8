"""The DICOM SR of an assessment: a Comprehensive 3D SR holding a TID 1500 measurement report with one group per
model (its verdict, patient P(severe), learned involvement where it has a lesion head; the model's name, kind and
checkpoint id as the algorithm) and one for the classical HU involvement; the disclaimer as a comment."""

from __future__ import annotations

from typing import Sequence

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from ..assessment import Assessment
from .device import DISCLAIMER, MANUFACTURER, SOFTWARE_VERSION, SR_SERIES_NUMBER, as_bytes, prepared_sources

#: Our own concepts (a private coding scheme: no standard code names a model's probability of severe disease).
SCHEME = "99CTSS"
P_SEVERE = hd.sr.CodedConcept("CTSS001", SCHEME, "Probability of severe COVID-19 pneumonia")
LEARNED_INVOLVEMENT = hd.sr.CodedConcept("CTSS002", SCHEME, "Lung involvement, learned lesion area")
CLASSICAL_INVOLVEMENT = hd.sr.CodedConcept("CTSS003", SCHEME, "Lung involvement, HU band")
CLASSICAL_ID = "classical HU involvement"
VERDICTS = {"severe": codes.SCT.Severe, "mild": codes.SCT.Mild}


def sr_values(assessment: Assessment) -> dict[str, dict[str, object]]:
    """What the SR holds, by tracking identifier (model name, or the classical group), rounded as the page's
    CSV rounds it (``Assessment.table``), so the two can be compared number for number."""
    out: dict[str, dict[str, object]] = {}
    for m in assessment.models:
        vp = m.prediction
        out[m.name] = {"kind": m.key, "checkpoint": m.model.ckpt_id, "verdict": vp.verdict,
                       "p_severe": round(vp.patient_p, 4),
                       "learned_involvement": None if vp.patient_involvement is None else round(vp.patient_involvement, 2)}
    if assessment.classical is not None:
        out[CLASSICAL_ID] = {"classical_involvement": round(float(assessment.classical.percent), 2)}
    return out


def write_sr(assessment: Assessment, sources: Sequence[Dataset]) -> bytes:
    """A Comprehensive 3D SR (TID 1500) of ``assessment`` referencing ``sources`` (the assessed series'
    headers, one per slice in the volume's order)."""
    sources = prepared_sources(sources, assessment.n_slices)
    values = sr_values(assessment)
    groups = []
    for m in assessment.models:
        v = values[m.name]
        measurements = [hd.sr.Measurement(name=P_SEVERE, value=float(v["p_severe"]), unit=codes.UCUM.NoUnits)]
        if v["learned_involvement"] is not None:
            measurements.append(hd.sr.Measurement(name=LEARNED_INVOLVEMENT, value=float(v["learned_involvement"]),
                                                  unit=codes.UCUM.Percent))
        groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier=m.name),
            algorithm_id=hd.sr.AlgorithmIdentification(name=f"{MANUFACTURER} {m.name} ({m.key})",
                                                       version=str(v["checkpoint"])),
            measurements=measurements,
            qualitative_evaluations=[hd.sr.QualitativeEvaluation(codes.SCT.Severity, VERDICTS[str(v["verdict"])])],
        ))
    if CLASSICAL_ID in values:
        groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier=CLASSICAL_ID),
            algorithm_id=hd.sr.AlgorithmIdentification(name=f"{MANUFACTURER} classical HU involvement",
                                                       version=SOFTWARE_VERSION),
            measurements=[hd.sr.Measurement(name=CLASSICAL_INVOLVEMENT,
                                            value=float(values[CLASSICAL_ID]["classical_involvement"]),
                                            unit=codes.UCUM.Percent)],
        ))
    observer = hd.sr.ObserverContext(
        observer_type=codes.cid270.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=generate_uid(), manufacturer_name=MANUFACTURER, model_name=MANUFACTURER))
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=codes.LN.CTUnspecifiedBodyRegion,
        imaging_measurements=groups,
    )
    report[0].ContentSequence.append(hd.sr.TextContentItem(
        name=codes.DCM.Comment, value=DISCLAIMER, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS))
    sr = hd.sr.Comprehensive3DSR(
        evidence=sources, content=report[0], series_instance_uid=generate_uid(), series_number=SR_SERIES_NUMBER,
        sop_instance_uid=generate_uid(), instance_number=1, manufacturer=MANUFACTURER, is_complete=True,
        series_description=f"CT severity models ({DISCLAIMER.rstrip('.').lower()})"[:64],
    )
    return as_bytes(sr)
