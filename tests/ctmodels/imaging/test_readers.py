"""Readers on tiny synthetic inputs: values, slice order, orientation, spacing, safe metadata, all sources."""

from __future__ import annotations

import gzip
import io
import random
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid

from ctmodels.imaging import ImageReadError, MixedSeriesError, Volume, read_any
from ctmodels.imaging.dicom_privacy import DICOM_META_KEYS
from ctmodels.imaging.nifti import NIFTI_META_KEYS
from ctmodels.imaging.raster import RASTER_META_KEYS
from tests.builders import ct_dataset, ct_dicom, dicom_bytes, zip_bytes

# Identifying values written into every synthetic DICOM; none may ever reach Volume.meta.
IDENTIFYING = {
    "PatientName": "DOE^JANE",
    "PatientID": "ID-12345",
    "PatientBirthDate": "19710704",
    "InstitutionName": "St Elsewhere General Hospital",
    "InstitutionAddress": "1 Main Street Springfield",
    "ReferringPhysicianName": "HOUSE^GREGORY",
    "AccessionNumber": "ACC-998877",
    "StudyDate": "20200315",
    "StudyTime": "101112",
    "StudyDescription": "CHEST JANE DOE FOLLOWUP",
    "SeriesDescription": "LUNG 1MM JANE",
    "OperatorsName": "TECH^TOM",
    "StationName": "CTSTATION7",
    "ImageComments": "patient Jane requested copy",
}
STUDY_UID = generate_uid()
SERIES_UID = generate_uid()

N = 5
Z = [-10.0, -12.5, -15.0, -17.5, -20.0]  # superior (larger z, LPS) first
SLOPE2 = 2  # slice index (in superior-first order) stored with slope 2 / intercept -2048


def expected_hu(k: int) -> np.ndarray:
    """HU of the k-th slice in superior-first order: a level per slice, a marker at (2, 3)."""
    hu = np.full((32, 32), -24.0 + 10.0 * k, dtype=np.float32)
    hu[2, 3] = 976.0
    hu[0, 0] = -1024.0
    return hu


SCANNER = {"Manufacturer": "ACME", "ManufacturerModelName": "Scanner 64", "KVP": "120",
           "ConvolutionKernel": "B30f", "PatientPosition": "HFS", "SliceThickness": "2.5"}


def series_slice(raw: np.ndarray, **kwargs) -> Dataset:
    """A slice of this file's series: ``ct_dataset`` with every identifying value, the study, the scanner,
    0.7 x 0.8 mm pixels 2.5 mm thick at x, y = -16 mm, instance 1, slope 1.0, intercept -1024.0; ``kwargs``
    override."""
    kwargs = {"instance": 1, "slope": 1.0, "intercept": -1024.0, "series_uid": SERIES_UID, **kwargs}
    return ct_dataset(raw, xy=(-16.0, -16.0), spacing=(0.7, 0.8), StudyInstanceUID=STUDY_UID, **IDENTIFYING,
                      **SCANNER, **kwargs)


def raw_for(k: int, slope: float, intercept: float) -> np.ndarray:
    return np.round((expected_hu(k) - intercept) / slope).astype(np.uint16)


def make_series(**kwargs) -> list[tuple[str, bytes]]:
    """5 slices in shuffled file order; InstanceNumber runs inferior->superior (opposite to z order)."""
    files = []
    for k, z in enumerate(Z):
        slope, intercept = (2.0, -2048.0) if k == SLOPE2 else (1.0, -1024.0)
        raw = raw_for(k, slope, intercept)
        ds = series_slice(raw, z=z, instance=N - k, slope=slope, intercept=intercept, **kwargs)
        files.append((f"slice_{k:02d}.dcm", dicom_bytes(ds)))
    random.Random(7).shuffle(files)
    return files


def assert_series(v: Volume) -> None:
    assert v.shape == (N, 32, 32)
    assert v.is_hu
    assert v.array.dtype == np.int16  # whole HU: int16, half of float32
    assert v.slice_positions == pytest.approx(tuple(Z))
    for k in range(N):
        np.testing.assert_array_equal(v.array[k], expected_hu(k))
    assert v.spacing == pytest.approx((2.5, 0.7, 0.8))


def assert_safe_meta(v: Volume, allowed: frozenset) -> None:
    assert set(v.meta) <= allowed, set(v.meta) - allowed
    text = repr(v.meta)
    for value in IDENTIFYING.values():
        assert value not in text
        for part in value.replace("^", " ").split():
            if len(part) > 3:
                assert part not in text, part
    assert STUDY_UID not in text and SERIES_UID not in text


# ------------------------------------------------------------------------------------------- DICOM


def test_dicom_series_from_folder(tmp_path: Path) -> None:
    for name, data in make_series():
        (tmp_path / name).write_bytes(data)
    v = read_any(tmp_path)
    assert_series(v)
    assert v.source_format == "dicom-series"
    assert_safe_meta(v, DICOM_META_KEYS)
    assert v.meta["Modality"] == "CT"
    assert v.meta["series_count"] == 1
    assert v.meta["n_slices"] == N
    assert v.meta["RescaleIntercept"] == -1024.0
    assert v.meta["slice_order"] == "position"


def test_dicom_series_from_zip_bytes_path_and_filelike(tmp_path: Path) -> None:
    members = make_series() + [("__MACOSX/._x.dcm", b"junk"), ("readme.txt", b"hello"), ("sub/", b"")]
    data = zip_bytes(dict(members))
    assert_series(read_any(data))
    zpath = tmp_path / "series.zip"
    zpath.write_bytes(data)
    assert_series(read_any(zpath))
    assert_series(read_any(str(zpath)))
    upload = io.BytesIO(data)
    upload.name = "series.zip"
    upload.read()  # already consumed once, like a re-run Streamlit script
    assert_series(read_any(upload))


def test_dicom_series_orders_by_position_not_instance_or_name() -> None:
    v = read_any(zip_bytes(dict(make_series())))
    assert list(v.slice_positions) == sorted(v.slice_positions, reverse=True)


def test_dicom_flipped_orientation_still_superior_first() -> None:
    """Column cosine pointing posterior->anterior flips the normal; order must stay head first."""
    v = read_any(zip_bytes(dict(make_series(iop=(1, 0, 0, 0, -1, 0)))))
    assert_series(v)


def test_dicom_fallbacks_slice_location_then_instance() -> None:
    files_loc, files_inst = [], []
    for k, z in enumerate(Z):
        raw = raw_for(k, 1.0, -1024.0)
        by_location = series_slice(raw, z=None, iop=None, slice_location=z, instance=N - k)
        files_loc.append((f"{k}.dcm", dicom_bytes(by_location)))
        files_inst.append((f"{k}.dcm", dicom_bytes(series_slice(raw, z=None, iop=None, instance=k + 1))))
    random.Random(1).shuffle(files_loc)
    random.Random(2).shuffle(files_inst)
    v = read_any(zip_bytes(dict(files_loc)))
    assert v.meta["slice_order"] == "slice_location"
    assert v.slice_positions == pytest.approx(tuple(Z))
    w = read_any(zip_bytes(dict(files_inst)))
    assert w.meta["slice_order"] == "instance_number"
    assert w.slice_positions is None
    for vol in (v, w):
        for k in range(N):
            np.testing.assert_array_equal(vol.array[k], expected_hu(k))
    assert w.spacing == pytest.approx((2.5, 0.7, 0.8))  # SliceThickness when positions are missing


def test_dicom_slices_at_one_position_are_refused_not_stacked() -> None:
    """Slices that repeat a position (a copied file, two acquisitions) would stack into a volume that is not one."""
    files = []
    for i in range(5):
        raw = raw_for(i, 1.0, -1024.0)
        files.append((f"f{4 - i}.dcm", dicom_bytes(series_slice(raw, z=5.0, instance=i + 1))))
    with pytest.raises(MixedSeriesError, match="4 of the 5 slices lie at a position another slice already has"):
        read_any(zip_bytes(dict(files)))


def test_single_dicom_file_path_bytes_filelike(tmp_path: Path) -> None:
    name, data = make_series()[0]
    path = tmp_path / name
    path.write_bytes(data)
    for source in (path, data, io.BytesIO(data)):
        v = read_any(source)
        assert v.shape == (1, 32, 32)
        assert v.source_format == "dicom"
        assert v.is_hu
        assert_safe_meta(v, DICOM_META_KEYS)


def test_dicom_without_preamble_by_name_hint() -> None:
    k = 1
    data = dicom_bytes(series_slice(raw_for(k, 1.0, -1024.0), z=3.0), preamble=False)
    assert data[128:132] != b"DICM"
    v = read_any(data, name="IM0001")
    np.testing.assert_array_equal(v.array[0], expected_hu(k))
    assert read_any(data, name="scan.dcm").source_format == "dicom"


def test_dicom_hu_floor_and_signed_pixels() -> None:
    raw = np.zeros((32, 32), np.int16)
    raw[0, 0] = -2000  # outside field of view
    raw[5, 5] = 40
    ds = series_slice(np.zeros((32, 32)), intercept=0.0)
    ds.PixelRepresentation = 1
    ds.PixelData = raw.tobytes()
    v = read_any(dicom_bytes(ds))
    assert v.array[0, 0, 0] == -1024.0
    assert v.array[0, 5, 5] == 40.0


def test_multiframe_classic_frames_become_slices() -> None:
    frames = np.stack([raw_for(k, 1.0, -1024.0) for k in range(3)])
    ds = series_slice(frames)
    ds.NumberOfFrames = 3
    v = read_any(dicom_bytes(ds))
    assert v.shape == (3, 32, 32)
    for k in range(3):
        np.testing.assert_array_equal(v.array[k], expected_hu(k))


def test_enhanced_ct_per_frame_positions_and_rescale() -> None:
    """Frames stored inferior->superior with per-frame rescale: output superior first, HU per frame."""
    zs = [0.0, 5.0, 10.0]
    rescale = [(1.0, -1024.0), (2.0, -2048.0), (0.5, -1024.0)]
    hu_by_z = {z: expected_hu(k) for k, z in enumerate(sorted(zs, reverse=True))}
    raws, per_frame = [], []
    for z, (slope, intercept) in zip(zs, rescale):
        raws.append(np.round((hu_by_z[z] - intercept) / slope).astype(np.uint16))
        item = Dataset()
        pos, pvt = Dataset(), Dataset()
        pos.ImagePositionPatient = [0.0, 0.0, z]
        pvt.RescaleSlope, pvt.RescaleIntercept = slope, intercept
        item.PlanePositionSequence = Sequence([pos])
        item.PixelValueTransformationSequence = Sequence([pvt])
        per_frame.append(item)
    ds = series_slice(np.stack(raws), z=None, iop=None)
    del ds.RescaleSlope, ds.RescaleIntercept, ds.PixelSpacing, ds.SliceThickness
    shared, orient, measures = Dataset(), Dataset(), Dataset()
    orient.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    measures.PixelSpacing = [0.5, 0.5]
    measures.SliceThickness = 5.0
    shared.PlaneOrientationSequence = Sequence([orient])
    shared.PixelMeasuresSequence = Sequence([measures])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    ds.NumberOfFrames = 3
    v = read_any(dicom_bytes(ds))
    assert v.slice_positions == pytest.approx((10.0, 5.0, 0.0))
    for k in range(3):
        np.testing.assert_array_equal(v.array[k], expected_hu(k))
    assert v.spacing == pytest.approx((5.0, 0.5, 0.5))
    assert_safe_meta(v, DICOM_META_KEYS)


def test_series_ignores_thumbnails_and_scouts() -> None:
    scout = series_slice(np.zeros((40, 40)), z=0.0)
    scout.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    png = io.BytesIO()
    Image.new("L", (16, 16)).save(png, "PNG")
    members = make_series() + [("scout.dcm", dicom_bytes(scout)), ("preview.png", png.getvalue())]
    v = read_any(zip_bytes(dict(members)))
    assert_series(v)
    assert v.meta["skipped_files"] == 2


# ------------------------------------------------------------------------------------------- NIfTI


def ras_pattern() -> np.ndarray:
    """RAS+ array (x right, y anterior, z superior) with unique markers at known corners."""
    d = np.full((10, 12, 8), -1000, dtype=np.int16)
    d[9, 0, 0] = 100  # right-most, posterior-most, inferior-most
    d[0, 11, 7] = 200  # left-most, anterior-most, superior-most
    d[4, 6, 7] = 300  # superior slice, mid
    return d


@pytest.mark.parametrize("orientation", ["RAS", "LPS", "LAI"])
def test_nifti_orientation_mapping(orientation: str) -> None:
    d = ras_pattern()
    zooms = np.array([0.7, 0.8, 2.5])
    flips = {"RAS": (1, 1, 1), "LPS": (-1, -1, 1), "LAI": (-1, 1, -1)}[orientation]
    data = d[:: flips[0], :: flips[1], :: flips[2]].copy()
    affine = np.diag([*(zooms * flips), 1.0])
    v = read_any(nib.Nifti1Image(data, affine).to_bytes(), name="scan.nii")
    assert v.source_format == "nifti"
    assert v.shape == (8, 12, 10)
    # slice 0 superior, row 0 anterior, column 0 patient right
    assert tuple(np.argwhere(v.array == 100)[0]) == (7, 11, 0)
    assert tuple(np.argwhere(v.array == 200)[0]) == (0, 0, 9)
    assert tuple(np.argwhere(v.array == 300)[0]) == (0, 5, 5)
    assert v.spacing == pytest.approx((2.5, 0.8, 0.7))
    assert v.is_hu
    assert list(v.slice_positions) == sorted(v.slice_positions, reverse=True)
    assert v.meta["original_orientation"] == orientation
    assert set(v.meta) <= NIFTI_META_KEYS


def test_nifti_gz_scaling_and_filelike() -> None:
    d = np.full((16, 16, 4), -500, np.int16)
    d[3, 4, 1] = 300
    d[0, 0, 0] = -1500  # -3024 HU after scaling: field-of-view padding, floored to air
    img = nib.Nifti1Image(d, np.diag([1.0, 1.0, 2.0, 1.0]))
    img.header.set_slope_inter(2.0, -24.0)
    upload = io.BytesIO(gzip.compress(img.to_bytes()))
    upload.name = "vol.nii.gz"
    v = read_any(upload)
    assert v.is_hu
    assert v.array.max() == pytest.approx(300 * 2 - 24)
    assert v.array.min() == pytest.approx(-1024)
    assert (v.array == -1024).sum() == d.size - 1


@pytest.mark.parametrize("cut", [100, 352, 2000])  # inside the header, at the data offset, inside the voxels
def test_multi_member_gzip_nifti_reads_like_one_member(cut: int) -> None:
    """bgzip and some pipelines write .nii.gz as several gzip members; gzip (and we) read them all."""
    d = (np.arange(16 * 16 * 4) % 700 - 600).astype(np.int16).reshape(16, 16, 4)
    raw = nib.Nifti1Image(d, np.eye(4)).to_bytes()
    one = read_any(gzip.compress(raw), name="v.nii.gz")
    several = read_any(gzip.compress(raw[:cut]) + gzip.compress(raw[cut:]) + gzip.compress(b""), name="v.nii.gz")
    np.testing.assert_array_equal(one.array, several.array)


@pytest.mark.parametrize("compress", [False, True])
def test_nifti_read_peaks_at_the_file_voxels_plus_the_result(compress: bool) -> None:
    """No chain of full copies: int16 voxels (2 B) + the float32 result (4 B) = 1.5x the result, plus a
    fixed overhead (the HU check's sample: at most 16 MB), was 2.75x for a gzip NIfTI through nibabel's
    image → float → canonical → contiguous copies."""
    import tracemalloc

    d = np.full((512, 512, 24), -1000, np.int16)
    d[100:400, 50:300, 3:20] = 40
    raw = nib.Nifti1Image(d, np.diag([-0.7, -0.7, 2.5, 1])).to_bytes()
    data = gzip.compress(raw, 1) if compress else raw
    del d, raw
    tracemalloc.start()
    try:
        v = read_any(data, name="v.nii.gz" if compress else "v.nii")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert v.shape == (24, 512, 512) and v.array[10, 200, 300] == 40
    limit = (1.5 if compress else 1.0) * v.array.nbytes + 16 * 2**20  # plain: the file's bytes are the voxels
    assert peak <= limit, (peak / v.array.nbytes)


def test_nifti_intensity_volume_is_not_hu() -> None:
    d = (np.arange(16 * 16 * 3) % 256).astype(np.uint8).reshape(16, 16, 3)
    v = read_any(nib.Nifti1Image(d, np.eye(4)).to_bytes())
    assert not v.is_hu
    assert v.meta["intensity"] == "intensity"
    assert v.array.max() == 255


def test_nifti_2d_4d_singleton_nifti2_and_nan_repair() -> None:
    d2 = np.full((16, 16), -1000, np.float32)
    assert read_any(nib.Nifti1Image(d2, np.eye(4)).to_bytes()).shape == (1, 16, 16)
    d4 = np.full((16, 16, 3, 1), -1000, np.float32)
    assert read_any(nib.Nifti1Image(d4, np.eye(4)).to_bytes()).shape == (3, 16, 16)
    v2 = read_any(nib.Nifti2Image(d4[..., 0], np.eye(4)).to_bytes())
    assert v2.shape == (3, 16, 16) and v2.meta["nifti_version"] == 2
    d3 = np.full((16, 16, 4), 40.0, np.float32)
    d3[0, 0, 0] = -1000.0
    d3[1, 1, 1] = np.nan  # 1 of 1024 voxels: repaired with the lowest finite value
    v = read_any(nib.Nifti1Image(d3, np.eye(4)).to_bytes())
    assert np.isfinite(v.array).all()
    assert v.meta["nonfinite_replaced"] == 1
    assert (v.array == -1000.0).sum() == 2


def test_nifti_from_zip_and_folder(tmp_path: Path) -> None:
    data = gzip.compress(nib.Nifti1Image(ras_pattern(), np.eye(4)).to_bytes())
    v = read_any(zip_bytes({"case/ct.nii.gz": data, "case/notes.txt": b"x"}))
    assert v.source_format == "nifti" and v.shape == (8, 12, 10)
    (tmp_path / "ct.nii.gz").write_bytes(data)
    assert read_any(tmp_path).shape == (8, 12, 10)


# ------------------------------------------------------------------------------------------ raster


def png_bytes(im: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def marker_image(value: int = 200, size: tuple[int, int] = (40, 30)) -> np.ndarray:
    a = np.zeros((size[1], size[0]), np.uint8)
    a[2, 7] = value  # row 2, column 7: rows/columns must not be swapped or flipped
    a[10:20, 10:20] = 100
    return a


def test_png_gray_keeps_values_and_layout(tmp_path: Path) -> None:
    a = marker_image()
    data = png_bytes(Image.fromarray(a))
    for source in (data, io.BytesIO(data)):
        v = read_any(source)
        assert v.source_format == "png"
        assert v.shape == (1, 30, 40)
        np.testing.assert_array_equal(v.array[0], a)
        assert not v.is_hu and v.spacing is None
        assert set(v.meta) <= RASTER_META_KEYS
    (tmp_path / "x.png").write_bytes(data)
    assert read_any(tmp_path / "x.png").shape == (1, 30, 40)


def test_png_named_jpg_is_read_by_content() -> None:
    v = read_any(png_bytes(Image.fromarray(marker_image())), name="slice.jpg")
    assert v.source_format == "png"


def test_rgb_rgba_palette_to_luminance() -> None:
    a = marker_image()
    rgb = Image.fromarray(np.stack([a] * 3, -1))
    v = read_any(png_bytes(rgb))
    np.testing.assert_allclose(v.array[0], a, atol=1)
    rgba = np.zeros((30, 40, 4), np.uint8)
    rgba[..., :3] = 255
    rgba[:15, :, 3] = 255  # top half opaque white, bottom half transparent white
    v = read_any(png_bytes(Image.fromarray(rgba, "RGBA")))
    assert v.array[0, :15].min() == 255 and v.array[0, 15:].max() == 0
    pal = Image.fromarray(a).convert("P")
    np.testing.assert_allclose(read_any(png_bytes(pal)).array[0], a, atol=1)


def test_16bit_png_rescaled_to_0_255() -> None:
    a = np.zeros((30, 40), np.uint16)
    a[5:10, 5:10] = 1000
    a[0, 0] = 4000
    v = read_any(png_bytes(Image.fromarray(a)))
    assert not v.is_hu
    assert v.array.min() == 0 and v.array.max() == 255
    assert v.array[0, 6, 6] == pytest.approx(1000 * 255 / 4000)
    assert v.meta["rescaled"] is True and v.meta["bit_depth"] == 16


def test_jpeg_tiff_bmp() -> None:
    a = marker_image()
    v = read_any(png_bytes(Image.fromarray(a), "JPEG", quality=95))
    assert v.source_format == "jpeg" and v.shape == (1, 30, 40)
    assert abs(float(v.array[0, 15, 15]) - 100) < 8
    v = read_any(png_bytes(Image.fromarray(a), "BMP"))
    assert v.source_format == "bmp"
    np.testing.assert_array_equal(v.array[0], a)
    pages = [Image.fromarray(np.full((30, 40), 10 * i, np.uint8)) for i in range(3)]
    buf = io.BytesIO()
    pages[0].save(buf, "TIFF", save_all=True, append_images=pages[1:])
    v = read_any(buf.getvalue())
    assert v.source_format == "tiff" and v.shape == (3, 30, 40)
    assert [float(v.array[i].mean()) for i in range(3)] == [0.0, 10.0, 20.0]


def test_image_stack_from_zip_and_folder_natural_order(tmp_path: Path) -> None:
    names = ["s1.png", "s2.png", "s10.png"]
    levels = [np.full((30, 40), 10 * (i + 1), np.uint8) for i in range(len(names))]
    members = [(n, png_bytes(Image.fromarray(a))) for n, a in zip(names, levels)]
    shuffled = [members[2], members[0], members[1]]
    v = read_any(zip_bytes(dict(shuffled)))
    assert v.source_format == "image-stack" and v.shape == (3, 30, 40)
    assert [float(v.array[i, 0, 0]) for i in range(3)] == [10.0, 20.0, 30.0]
    assert not v.is_hu
    for name, data in members:
        (tmp_path / name).write_bytes(data)
    w = read_any(tmp_path)
    np.testing.assert_array_equal(w.array, v.array)
    single = read_any(zip_bytes(dict(members[:1])))
    assert single.source_format == "png"


def test_bad_input_never_escapes_untyped() -> None:
    """Fuzz: truncations and byte flips of valid files either read or raise ImageReadError."""
    rng = random.Random(0)
    seeds = [
        make_series()[0][1],
        png_bytes(Image.fromarray(marker_image())),
        png_bytes(Image.fromarray(marker_image()), "JPEG"),
        gzip.compress(nib.Nifti1Image(ras_pattern(), np.eye(4)).to_bytes()),
        nib.Nifti1Image(ras_pattern(), np.eye(4)).to_bytes(),
        zip_bytes(dict(make_series()[:2])),
    ]
    for seed in seeds:
        for _ in range(12):
            data = bytearray(seed)
            if rng.random() < 0.5:
                data = data[: rng.randrange(1, len(data))]
            else:
                for _ in range(rng.randrange(1, 20)):
                    data[rng.randrange(len(data))] = rng.randrange(256)
            try:
                read_any(bytes(data), name="x.dcm")
            except ImageReadError as exc:
                assert str(exc)


def test_no_identifying_value_in_logs_or_warnings(caplog: pytest.LogCaptureFixture, recwarn) -> None:
    """Invalid-VR values (as in real exports: UUID-style UIDs) make pydicom warn WITH the value; not here."""
    bad_uid = "uuid-DOE-JANE-0001"
    files = []
    for k, z in enumerate(Z[:3]):
        ds = series_slice(raw_for(k, 1.0, -1024.0), z=z, series_uid=bad_uid)
        ds.StudyInstanceUID = "study-ID-12345"
        ds.PatientSex = "FEMALE-JANE"  # CS too long and lower-case-free: invalid value
        files.append((f"{k}.dcm", dicom_bytes(ds)))
    data = zip_bytes(dict(files))
    caplog.clear()  # writing the test files warned about the invalid values: only reading counts
    recwarn.clear()
    with caplog.at_level("DEBUG"):
        v = read_any(data)
    assert v.shape == (3, 32, 32)
    text = caplog.text + " ".join(str(w.message) for w in recwarn.list)
    for needle in [*IDENTIFYING.values(), bad_uid, "ID-12345", "JANE"]:
        assert needle not in text, needle
    assert_safe_meta(v, DICOM_META_KEYS)


def test_compact_keeps_whole_hu_as_int16_and_anything_else_as_it_was() -> None:
    """Sessions hold compact uploads (half the memory); compacting must never change a value."""
    hu = np.array([[[-1024.0, -850.0], [40.0, 3071.0]]], np.float32)
    small = Volume(hu, is_hu=True, spacing=(1.0, 0.7, 0.7)).compact()
    assert small.array.dtype == np.int16 and small.spacing == (1.0, 0.7, 0.7)
    assert small.slice(0).dtype == np.float32 and np.array_equal(small.slice(0), hu[0])
    for values, is_hu in [([0.5, 1.0], True), ([1e6, 0.0], True), ([np.nan, 0.0], True), ([12.0, 200.0], False)]:
        vol = Volume(np.array([[values, values]], np.float32), is_hu=is_hu)
        assert vol.compact() is vol, values  # fractional, out of int16, NaN, or not HU: kept float32
    assert Volume(np.zeros((1, 2, 2), np.int16), is_hu=False).array.dtype == np.float32


def test_dicom_hu_are_int16_when_whole_and_float32_otherwise() -> None:
    from ctmodels.imaging import ImplausibleScanError

    assert read_any(ct_dicom(), name="x.dcm").array.dtype == np.int16  # slope 1, intercept -1024: whole HU
    half = read_any(ct_dicom(RescaleSlope=0.5), name="x.dcm")
    assert half.array.dtype == np.float32 and half.slice(0)[0, 0] == 1000 * 0.5 - 1024
    high = np.full((32, 32), 40000, np.uint16).tobytes()  # 40000 - 1024 is beyond int16: not wrapped around
    with pytest.raises(ImplausibleScanError, match="3.9e"):
        read_any(ct_dicom(pixels=high, BitsStored=16, HighBit=15), name="x.dcm")
