"""Write phantom patients in every dataset layout the app reads.

Layouts (each a sub-folder of the dataset root):
- ``dicom/``  one DICOM CT series per patient + ``labels.csv`` (patient-level labels)
- ``kaggle/`` covid19-ct-scans style: ``metadata.csv``, ``ct_scans/``, ``lung_mask/``,
  ``infection_mask/``, ``lung_and_infection_mask/`` (NIfTI)
- ``mosmed/`` MosMedData style: ``studies/CT-0`` … ``CT-4`` (.nii.gz) + ``masks/``
- ``png/``    folder-per-class 8-bit lung-window slices (``mild/``, ``severe/``), slice labels

Orientation conventions match the readers: DICOM LPS with ImageOrientationPatient
[1,0,0,0,1,0] and slice 0 the most superior; NIfTI canonical RAS+.
"""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from ..window import LUNG, to_uint8
from .generate import PhantomPatient

LAYOUTS = ("dicom", "kaggle", "mosmed", "png")
UID_ROOT = "1.2.826.0.1.3680043.8.498."  # pydicom's example root, fine for synthetic data
MIN_LUNG_FRACTION_FOR_SLICE = 0.05


def mosmed_category(involvement_pct: float) -> str:
    """MosMedData CT grade: CT-0 normal, CT-1 <25 %, CT-2 25–50 %, CT-3 50–75 %, CT-4 ≥75 %."""
    if involvement_pct <= 0.0:
        return "CT-0"
    for grade, upper in ((1, 25.0), (2, 50.0), (3, 75.0)):
        if involvement_pct < upper:
            return f"CT-{grade}"
    return "CT-4"


def lung_slices(patient: PhantomPatient) -> list[int]:
    """Slices with a meaningful amount of lung (the ones worth labelling and training on)."""
    area = np.count_nonzero(patient.lung, axis=(1, 2))
    if area.max() == 0:
        return []
    return [int(i) for i in np.nonzero(area >= MIN_LUNG_FRACTION_FOR_SLICE * area.max())[0]]


def _to_canonical(vol: np.ndarray) -> np.ndarray:
    """Our (slice sup→inf, row ant→post, col right→left) array → NIfTI RAS+ (x, y, z) order."""
    return np.ascontiguousarray(vol[::-1, ::-1, ::-1].transpose(2, 1, 0))


def _nifti(vol: np.ndarray, spacing: tuple[float, float, float], dtype: type) -> nib.Nifti1Image:
    s, px_r, px_c = spacing
    affine = np.diag([px_c, px_r, s, 1.0])
    img = nib.Nifti1Image(_to_canonical(vol).astype(dtype), affine)
    img.header.set_xyzt_units("mm")
    img.header.set_qform(affine, code=1)
    img.header.set_sform(affine, code=1)
    return img


def _save_nifti(img: nib.Nifti1Image, path: Path) -> None:
    """Save; .nii.gz with a fast compression level (these are demo files, not archives)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.name.endswith(".gz"):
        with gzip.open(path, "wb", compresslevel=1) as fh:
            fh.write(img.to_bytes())
    else:
        nib.save(img, path)


def write_dicom_series(patient: PhantomPatient, folder: Path, seed: int) -> None:
    """One uncompressed CT series, HU stored as unsigned 12-bit with intercept -1024."""
    folder.mkdir(parents=True, exist_ok=True)
    s, h, w = patient.hu.shape
    slice_mm, px, _ = patient.spacing
    x0 = -w * px / 2.0 + px / 2.0
    y0 = -h * px / 2.0 + px / 2.0
    ent = [str(seed), patient.patient_id]
    study_uid = generate_uid(UID_ROOT, entropy_srcs=ent + ["study"])
    series_uid = generate_uid(UID_ROOT, entropy_srcs=ent + ["series"])
    frame_uid = generate_uid(UID_ROOT, entropy_srcs=ent + ["frame"])
    stored = (patient.hu.astype(np.int32) + 1024).clip(0, 4095).astype(np.uint16)
    for i in range(s):
        sop_uid = generate_uid(UID_ROOT, entropy_srcs=ent + [f"sop{i}"])
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = pydicom.Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = sop_uid
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.Modality = "CT"
        ds.PatientID = patient.patient_id
        ds.PatientName = "SYNTHETIC^PHANTOM"
        ds.SeriesDescription = "Synthetic chest CT phantom (CT Severity Studio)"
        ds.BodyPartExamined = "CHEST"
        ds.Manufacturer = "CT Severity Studio"
        ds.ManufacturerModelName = "Synthetic phantom"
        ds.ImageType = ["DERIVED", "PRIMARY", "AXIAL"]
        ds.KVP = "120"
        ds.ConvolutionKernel = "SYNTH"
        ds.PatientPosition = "HFS"
        ds.SeriesNumber = 1
        ds.InstanceNumber = i + 1
        z = -(i + 0.5) * slice_mm
        ds.ImagePositionPatient = [f"{x0:.3f}", f"{y0:.3f}", f"{z:.3f}"]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.SliceLocation = f"{z:.3f}"
        ds.SliceThickness = f"{slice_mm:g}"
        ds.PixelSpacing = [f"{px:g}", f"{px:g}"]
        ds.Rows, ds.Columns = h, w
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
        ds.PixelRepresentation = 0
        ds.RescaleIntercept = "-1024"
        ds.RescaleSlope = "1"
        ds.RescaleType = "HU"
        ds.WindowCenter, ds.WindowWidth = "-600", "1500"
        ds.PixelData = stored[i].tobytes()
        ds.save_as(folder / f"IM{i + 1:04d}.dcm", enforce_file_format=True)


def write_kaggle(patient: PhantomPatient, root: Path) -> dict[str, str]:
    """NIfTI CT + masks in the covid19-ct-scans folders; returns the metadata.csv row."""
    pid = patient.patient_id
    ct_name, mask_name = f"phantom_org_{pid}.nii", f"phantom_{pid}.nii"
    lung = patient.lung
    infection = (patient.lesion > 0).astype(np.uint8)
    both = lung.copy()
    both[infection > 0] = 3
    _save_nifti(_nifti(patient.hu, patient.spacing, np.int16), root / "ct_scans" / ct_name)
    for sub, data in (("lung_mask", lung), ("infection_mask", infection), ("lung_and_infection_mask", both)):
        _save_nifti(_nifti(data, patient.spacing, np.uint8), root / sub / mask_name)
    prefix = "../input/covid19-ct-scans"
    return {
        "ct_scan": f"{prefix}/ct_scans/{ct_name}",
        "lung_mask": f"{prefix}/lung_mask/{mask_name}",
        "infection_mask": f"{prefix}/infection_mask/{mask_name}",
        "lung_and_infection_mask": f"{prefix}/lung_and_infection_mask/{mask_name}",
    }


def write_mosmed(patient: PhantomPatient, root: Path, study_number: int) -> str:
    """``studies/CT-k/study_NNNN.nii.gz`` + ``masks/study_NNNN_mask.nii.gz``; returns the category."""
    cat = mosmed_category(patient.involvement_pct)
    name = f"study_{study_number:04d}"
    _save_nifti(_nifti(patient.hu, patient.spacing, np.int16), root / "studies" / cat / f"{name}.nii.gz")
    lesion = (patient.lesion > 0).astype(np.uint8)
    _save_nifti(_nifti(lesion, patient.spacing, np.uint8), root / "masks" / f"{name}_mask.nii.gz")
    return cat


def write_png(patient: PhantomPatient, root: Path, threshold_pct: float) -> int:
    """Lung-window 8-bit slices into ``mild/`` or ``severe/`` by each slice's own involvement."""
    per_slice = patient.slice_involvement()
    n = 0
    for i in lung_slices(patient):
        cls = "severe" if per_slice[i] >= threshold_pct else "mild"
        out = root / cls / f"{patient.patient_id}_s{i:03d}.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(to_uint8(patient.hu[i], LUNG)).save(out, optimize=False, compress_level=1)
        n += 1
    return n


def write_csv(path: Path, rows: list[dict], fields: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        wr = csv.DictWriter(fh, fieldnames=fields)
        wr.writeheader()
        wr.writerows(rows)
