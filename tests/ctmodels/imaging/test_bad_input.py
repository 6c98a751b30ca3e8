"""Every kind of bad input gets its specific ImageReadError subclass and a message a clinician can read."""

from __future__ import annotations

import gzip
import io
import os
import re
import stat
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Any, Callable

import nibabel as nib
import numpy as np
import pytest
from PIL import Image
from pydicom.encaps import encapsulate
from pydicom.uid import generate_uid

from ctmodels.imaging import (
    CorruptImageError,
    EmptyArchiveError,
    ImageReadError,
    ImageTooLargeError,
    ImplausibleScanError,
    MixedSeriesError,
    NoPixelDataError,
    NotAnImageError,
    NotCTError,
    UnsafeArchiveError,
    UnsupportedDimensionsError,
    UnsupportedEncodingError,
    read_any,
)
from tests.builders import ct_dicom, zip_bytes

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4"
JPEG_LOSSLESS_SV1 = "1.2.840.10008.1.2.4.70"
JPEG_LS_LOSSLESS = "1.2.840.10008.1.2.4.80"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
MPEG2 = "1.2.840.10008.1.2.4.100"  # a video codec: no pixel decoder exists for it


# --------------------------------------------------------------------------------------- builders


def png(size: tuple[int, int] = (32, 32), mode: str = "L") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size).save(buf, "PNG")
    return buf.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A tiny real PNG whose IHDR (with a valid CRC) claims a huge size: nothing big is ever allocated."""
    data = bytearray(png((16, 16)))
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    return bytes(data)


def jpeg_corrupt() -> bytes:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (64, 64), dtype=np.uint8)).save(buf, "JPEG")
    data = buf.getvalue()
    return data[: len(data) // 2]  # body cut: decoder must fail, not return half an image silently


def nifti(shape: tuple[int, ...], value: float = -1000.0) -> bytes:
    return nib.Nifti1Image(np.full(shape, value, np.float32), np.eye(4)).to_bytes()


def nifti_noise(shape: tuple[int, ...]) -> bytes:
    """Incompressible voxels, so a cut .nii.gz is cut inside the voxel data."""
    values = np.random.default_rng(4).normal(-500, 300, shape).astype(np.float32)
    return nib.Nifti1Image(values, np.eye(4)).to_bytes()


def nifti_mostly_nan() -> bytes:
    d = np.full((16, 16, 4), np.nan, np.float32)
    d[:8] = -1000
    return nib.Nifti1Image(d, np.eye(4)).to_bytes()


def symlink_member() -> bytes:
    info = zipfile.ZipInfo("series/IM0001.dcm")
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return zip_bytes({info: b"../../../etc/passwd"})


def zip_bomb() -> bytes:
    return zip_bytes({"IM0001.dcm": b"\x00" * (4 * 1024 * 1024)})


def too_many_members() -> bytes:
    return zip_bytes({f"f{i}.dcm": b"" for i in range(5001)}, stored=True)


def folder_with_outside_link(tmp_path: Path) -> Path:
    folder = tmp_path / "series"
    folder.mkdir()
    (folder / "IM0001.dcm").write_bytes(ct_dicom())
    outside = tmp_path / "secret.dcm"
    outside.write_bytes(ct_dicom())
    os.symlink(outside, folder / "IM0002.dcm")
    return folder


def folder_with_link_loop(tmp_path: Path) -> Path:
    folder = tmp_path / "series"
    folder.mkdir()
    (folder / "IM0001.dcm").write_bytes(ct_dicom())
    os.symlink(folder / "IM0002.dcm", folder / "IM0002.dcm")  # a link to itself
    return folder


def float_tiff_with_infinity(tmp_path: Path) -> bytes:
    from PIL import Image

    arr = np.zeros((32, 32), np.float32)
    arr[:16] = np.inf
    buf = io.BytesIO()
    Image.fromarray(arr, mode="F").save(buf, format="TIFF")
    return buf.getvalue()


def dicom_series_one_position(tmp_path: Path) -> bytes:
    uid = generate_uid()
    return zip_bytes({f"IM{k}.dcm": ct_dicom(series_uid=uid, z=5.0) for k in range(5)})


def animated_png(tmp_path: Path) -> bytes:
    from PIL import Image

    frames = [Image.fromarray(np.full((32, 32), 40 * k, np.uint8)) for k in range(3)]
    buf = io.BytesIO()
    frames[0].save(buf, format="PNG", save_all=True, append_images=frames[1:])
    return buf.getvalue()


def tiff_pages(n: int, side: int) -> bytes:
    page = Image.new("L", (side, side))  # one blank page, appended n-1 times: n pages of 4096² cost 16 MB
    buf = io.BytesIO()
    page.save(buf, format="TIFF", save_all=True, append_images=[page] * (n - 1), compression="tiff_deflate")
    return buf.getvalue()


def deflated_dicom(inflated_zeros: int = 0) -> bytes:
    """A CT slice in Deflated Explicit VR; with ``inflated_zeros``, its data set replaced by that many zero
    bytes, deflated (a few hundred KB that pydicom would inflate whole)."""
    import zlib

    from pydicom.uid import DeflatedExplicitVRLittleEndian

    data = ct_dicom(transfer_syntax=DeflatedExplicitVRLittleEndian)
    if not inflated_zeros:
        return data
    start = 144 + int.from_bytes(data[140:144], "little")
    packer, chunk, parts = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS), bytes(1 << 20), []
    for _ in range(inflated_zeros >> 20):
        parts.append(packer.compress(chunk))
    return data[:start] + b"".join(parts) + packer.flush()


def dicomdir() -> bytes:
    return ct_dicom(sop_class="1.2.840.10008.1.3.10", pixels=None)


def dicom_unsupported_codec() -> bytes:
    return ct_dicom(transfer_syntax=MPEG2, pixels=encapsulate([b"\x00\x00\x01\xb3" + b"\x00" * 64]))


def dicom_corrupt_jpeg_lossless() -> bytes:
    garbage = b"\xff\xd8\xff\xc3" + np.random.default_rng(3).bytes(300)
    return ct_dicom(transfer_syntax=JPEG_LOSSLESS_SV1, pixels=encapsulate([garbage]))


def dicom_cut_codestream(syntax: str, keep: float = 0.5) -> bytes:
    """A CT slice whose JPEG-LS (pydicom's MR_small stream) or JPEG baseline codestream stops halfway, as in an
    interrupted copy: libjpeg decodes what is there and fills the rest without a word."""
    import pydicom
    from pydicom.encaps import generate_frames

    if syntax == JPEG_LS_LOSSLESS:
        src = pydicom.dcmread(pydicom.data.get_testdata_file("MR_small_jpeg_ls_lossless.dcm"))
        stream, side, bits = next(generate_frames(src.PixelData, number_of_frames=1)), 64, 16
    else:
        buf = io.BytesIO()
        Image.fromarray(np.random.default_rng(4).integers(0, 255, (64, 64), dtype=np.uint8)).save(buf, "JPEG")
        stream, side, bits = buf.getvalue(), 64, 8
    cut = encapsulate([stream[: int(len(stream) * keep)]])
    return ct_dicom(cut, rows=side, cols=side, transfer_syntax=syntax, BitsAllocated=bits, BitsStored=bits,
                    HighBit=bits - 1, PixelRepresentation=0)


def jpeg_claiming_4096_with_little_data() -> bytes:
    buf = io.BytesIO()
    Image.new("L", (4096, 4096), 40).save(buf, "JPEG")
    return buf.getvalue()[:2000]


def zip_slices_of_different_sizes() -> bytes:
    other = ct_dicom(series_uid="1.2.3", rows=48, cols=48, z=1.0)
    return zip_bytes({"a.dcm": ct_dicom(series_uid="1.2.3"), "b.dcm": other})


def zip_two_pixel_spacings() -> bytes:
    """One series whose slices were resampled differently: measured with the first's spacing, areas go wrong."""
    return zip_bytes({f"{k}.dcm": ct_dicom(series_uid="1.2.3", z=float(k), spacing=(0.7, 0.7) if k < 2 else (0.8, 0.8))
                      for k in range(4)})


def dicom_rows_columns_smaller_than_pixel_data() -> bytes:
    """A 64 x 64 image whose header says 32 x 32: read as stated, it shows a garbled quarter."""
    return ct_dicom(np.full((64, 64), 1000, np.uint16), rows=32, cols=32)


def nifti_typed(values: np.ndarray) -> bytes:
    return nib.Nifti1Image(values, np.eye(4), dtype=values.dtype).to_bytes()


def tar_of(members: dict[str, bytes], mode: str = "w:gz", link: str | None = None) -> bytes:
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        if link:
            info = tarfile.TarInfo(link)
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tf.addfile(info)
    return buf.getvalue()


def zero_byte_file(tmp_path: Path) -> Path:
    path = tmp_path / "empty.nii"
    path.write_bytes(b"")
    return path


def empty_folder(tmp_path: Path) -> Path:
    path = tmp_path / "f"
    path.mkdir()
    return path


NOTE = b"this is just a note, not a picture\n" * 5
SMALL_NII = nifti((16, 16, 2))
INNER_ZIP = zip_bytes({"a.dcm": ct_dicom()})

# name, builder (tmp_path -> source), name hint, expected error, words the message must contain
CASES: list[tuple[str, Callable[[Path], Any], str | None, type[ImageReadError], tuple[str, ...]]] = [
    ("random-bytes-dcm", lambda t: np.random.default_rng(1).bytes(4000), "scan.dcm", NotAnImageError,
     ("DICOM",)),
    ("random-bytes-noname", lambda t: np.random.default_rng(2).bytes(4000), None, NotAnImageError, ()),
    ("truncated-dicom", lambda t: ct_dicom()[:-700], "IM1.dcm", CorruptImageError, ("truncated",)),
    ("dicom-without-pixels", lambda t: ct_dicom(pixels=None), "x.dcm", NoPixelDataError, ("no image",)),
    ("dicomdir-only", lambda t: dicomdir(), "DICOMDIR", NoPixelDataError, ("DICOMDIR",)),
    ("mr-dicom", lambda t: ct_dicom(modality="MR", sop_class=MR_IMAGE), "x.dcm", NotCTError,
     ("MR", "not a CT")),
    ("ultrasound-dicom", lambda t: ct_dicom(modality="US"), "x.dcm", NotCTError, ("ultrasound",)),
    ("xray-dicom", lambda t: ct_dicom(modality="CR"), "x.dcm", NotCTError, ("X-ray",)),
    ("secondary-capture", lambda t: ct_dicom(modality="OT", sop_class=SECONDARY_CAPTURE), "x.dcm", NotCTError,
     ("secondary capture",)),
    ("dicom-too-large", lambda t: ct_dicom(rows=8192, cols=8192), "x.dcm", ImageTooLargeError, ()),
    ("dicom-unsupported-codec", lambda t: dicom_unsupported_codec(), "x.dcm", UnsupportedEncodingError,
     ("compressed",)),
    ("dicom-corrupt-jpeg-lossless", lambda t: dicom_corrupt_jpeg_lossless(), "x.dcm", CorruptImageError,
     ("damaged",)),
    ("dicom-jpeg-ls-half-stream", lambda t: dicom_cut_codestream(JPEG_LS_LOSSLESS), "x.dcm", CorruptImageError,
     ("truncated",)),
    ("dicom-jpeg-baseline-half-stream", lambda t: dicom_cut_codestream(JPEG_BASELINE), "x.dcm", CorruptImageError,
     ("truncated",)),
    ("jpeg-4096-header-tiny-data", lambda t: jpeg_claiming_4096_with_little_data(), "x.jpg", CorruptImageError,
     ("damaged",)),
    ("nifti-4d", lambda t: nifti((8, 8, 4, 3)), "x.nii", UnsupportedDimensionsError, ("4-D",)),
    ("nifti-one-line", lambda t: nifti((1, 64, 10)), "x.nii", UnsupportedDimensionsError, ()),
    ("nifti-truncated", lambda t: nifti((32, 32, 8))[:-2000], "x.nii", CorruptImageError, ("truncated",)),
    ("nifti-gz-truncated", lambda t: gzip.compress(nifti_noise((32, 32, 8)))[:-300], "x.nii.gz",
     CorruptImageError, ("truncated",)),
    ("nifti-mostly-nan", lambda t: nifti_mostly_nan(), "x.nii", CorruptImageError, ("NaN",)),
    ("gzip-not-nifti", lambda t: gzip.compress(b"hello world" * 100), "x.nii.gz", NotAnImageError,
     ("NIfTI",)),
    ("one-pixel-png", lambda t: png((1, 1)), "x.png", UnsupportedDimensionsError, ()),
    ("one-line-png", lambda t: png((256, 1)), "x.png", UnsupportedDimensionsError, ()),
    ("huge-png-20000", lambda t: png_claiming(20000, 20000), "x.png", ImageTooLargeError, ()),
    ("big-png-5000", lambda t: png_claiming(5000, 5000), "x.png", ImageTooLargeError, ()),
    ("text-named-png", lambda t: NOTE, "scan.png", NotAnImageError, ("not an image",)),
    ("corrupt-jpeg", lambda t: jpeg_corrupt(), "x.jpg", CorruptImageError, ("damaged",)),
    ("zero-bytes", lambda t: b"", "x.dcm", NotAnImageError, ("empty",)),
    ("zero-byte-file", zero_byte_file, None, NotAnImageError, ("empty",)),
    ("missing-path", lambda t: t / "nope.dcm", None, NotAnImageError, ()),
    ("zip-only-txt", lambda t: zip_bytes({"notes.txt": b"hello"}), "x.zip", EmptyArchiveError,
     ("no DICOM, NIfTI or image",)),
    ("zip-only-unknown", lambda t: zip_bytes({"data.bin": b"\x01\x02" * 50}), "x.zip", EmptyArchiveError, ()),
    ("empty-zip", lambda t: zip_bytes({}), "x.zip", EmptyArchiveError, ()),
    ("empty-folder", empty_folder, None, EmptyArchiveError, ()),
    ("corrupt-zip", lambda t: zip_bytes({"a.dcm": ct_dicom()})[:-60], "x.zip", CorruptImageError, ("zip",)),
    ("zip-slices-different-sizes", lambda t: zip_slices_of_different_sizes(), "x.zip", MixedSeriesError, ()),
    ("zip-dicom-and-nifti", lambda t: zip_bytes({"a.dcm": ct_dicom(), "b.nii": SMALL_NII}), "x.zip",
     MixedSeriesError, ()),
    ("zip-two-nifti", lambda t: zip_bytes({"a.nii": SMALL_NII, "b.nii": SMALL_NII}), "x.zip",
     MixedSeriesError, ()),
    ("zip-pngs-different-sizes", lambda t: zip_bytes({"1.png": png((32, 32)), "2.png": png((40, 32))}),
     "x.zip", MixedSeriesError, ()),
    ("zip-slip", lambda t: zip_bytes({"../../evil.dcm": ct_dicom()}), "x.zip", UnsafeArchiveError, ("..",)),
    ("zip-absolute-path", lambda t: zip_bytes({"/etc/evil.dcm": ct_dicom()}), "x.zip", UnsafeArchiveError,
     ()),
    ("zip-symlink-member", lambda t: symlink_member(), "x.zip", UnsafeArchiveError, ("link",)),
    ("nested-zip", lambda t: zip_bytes({"inner.zip": INNER_ZIP}), "x.zip", UnsafeArchiveError,
     ("unzip the inner archive",)),
    ("nested-zip-renamed", lambda t: zip_bytes({"inner.dcm": INNER_ZIP}), "x.zip", UnsafeArchiveError, ()),
    ("zip-bomb", lambda t: zip_bomb(), "x.zip", UnsafeArchiveError, ("bomb",)),
    ("zip-too-many-members", lambda t: too_many_members(), "x.zip", UnsafeArchiveError, ()),
    ("folder-link-outside", folder_with_outside_link, None, UnsafeArchiveError, ("link",)),
    ("folder-link-loop", folder_with_link_loop, None, UnsafeArchiveError, ("link", "itself")),
    # read without error but impossible: refused with what is wrong
    ("float-tiff-infinity", float_tiff_with_infinity, "x.tif", ImplausibleScanError, ("infinity",)),
    ("dicom-slope-1e30", lambda t: ct_dicom(RescaleSlope=1e30), "x.dcm", ImplausibleScanError, ("rescale",)),
    ("dicom-negative-spacing", lambda t: ct_dicom(PixelSpacing=[-0.7, 0.7]), "x.dcm", ImplausibleScanError,
     ("spacing", "positive")),
    ("dicom-huge-spacing", lambda t: ct_dicom(PixelSpacing=[1e30, 1e30]), "x.dcm", ImplausibleScanError,
     ("spacing",)),
    ("dicom-palette-colour", lambda t: ct_dicom(PhotometricInterpretation="PALETTE COLOR"), "x.dcm",
     NotCTError,
     ("colour", "greyscale")),
    ("dicom-1-bit", lambda t: ct_dicom(b"\xff" * 128, BitsAllocated=1, BitsStored=1, HighBit=0), "x.dcm",
     NotCTError, ("1 bit",)),
    ("dicom-five-slices-one-position", dicom_series_one_position, "x.zip", MixedSeriesError, ("position",)),
    ("apng", animated_png, "x.png", UnsupportedDimensionsError, ("animated", "3 frames")),
    ("dicom-deflated-bomb", lambda t: deflated_dicom(400 << 20), "x.dcm", ImageTooLargeError, ("deflated",)),
    ("zip-many-small-zero-members", lambda t: zip_bytes({f"m{k}.dcm": bytes(1024**2) for k in range(300)}),
     "x.zip",
     UnsafeArchiveError, ("zip bomb",)),
    # page counts from the headers, before anything is decoded
    ("tiff-12-pages-of-4096", lambda t: tiff_pages(12, 4096), "x.tif", ImageTooLargeError, ()),
    ("zip-of-multipage-tiffs", lambda t: zip_bytes({f"p{k}.tif": tiff_pages(600, 64) for k in range(4)}),
     "x.zip",
     ImageTooLargeError, ("slices",)),
    # pictures we do not read, and paths that are not files: the message says what they are
    ("gif", lambda t: b"GIF89a" + bytes(64), "x.gif", NotAnImageError, ("GIF", "PNG")),
    ("webp", lambda t: b"RIFF\x24\x00\x00\x00WEBPVP8 " + bytes(64), "x.webp", NotAnImageError, ("WebP",)),
    ("fifo", lambda t: (os.mkfifo(t / "pipe"), t / "pipe")[1], None, NotAnImageError, ("not a regular file",)),
    # faults a probe of real-world exports found (issue "DICOM in and out", item 6)
    ("dicom-two-pixel-spacings", lambda t: zip_two_pixel_spacings(), "x.zip", MixedSeriesError,
     ("pixel spacings", "0.7 mm and 0.8 mm")),
    ("dicom-rows-columns-smaller-than-pixel-data", lambda t: dicom_rows_columns_smaller_than_pixel_data(), "x.dcm",
     CorruptImageError, ("more image data", "32 x 32")),
    ("nifti-uint64-extremes", lambda t: nifti_typed(np.full((16, 16, 4), 4_600_000_000_000_000_000, np.uint64)),
     "x.nii", ImplausibleScanError, ("4.6e+18", "export")),
    ("nifti-float32-extremes", lambda t: nifti_typed(np.array([[[-3e38, 3e38]] * 16] * 16, np.float32)), "x.nii",
     ImplausibleScanError, ("-3e+38",)),
    ("nifti-float64-gz-truncated", lambda t: gzip.compress(nifti_typed(
        np.random.default_rng(5).normal(-500, 300, (32, 32, 8))))[:-300], "x.nii.gz", CorruptImageError, ()),
    ("tar-gz-with-link", lambda t: tar_of({"a.dcm": ct_dicom()}, link="b.dcm"), "x.tar.gz", UnsafeArchiveError,
     ("link",)),
    ("tar-slip", lambda t: tar_of({"../../evil.dcm": ct_dicom()}), "x.tar.gz", UnsafeArchiveError, ("..", "tar")),
    ("tar-only-txt", lambda t: tar_of({"notes.txt": b"hello"}, mode="w"), "x.tar", EmptyArchiveError, ("tar",)),
]

CLASS_NAME = re.compile(r"\b\w*(Error|Exception|Warning)\b|Traceback|File \"|<class|0x[0-9a-f]{6,}")


def assert_readable(message: str) -> None:
    assert message and message.strip()
    assert len(message) < 300, message
    assert not CLASS_NAME.search(message), message
    assert "\n" not in message
    assert "DOE" not in message and "JANE" not in message


@pytest.mark.parametrize(
    "build, name, expected, words", [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_input_raises_typed_readable_error(tmp_path: Path, build, name, expected, words) -> None:
    source = build(tmp_path)
    with pytest.raises(ImageReadError) as info:
        read_any(source, name=name)
    assert type(info.value) is expected, f"{type(info.value).__name__}: {info.value}"
    assert_readable(str(info.value))
    for word in words:
        assert word.lower() in str(info.value).lower(), str(info.value)
    assert info.value.kind == expected.kind


@pytest.mark.parametrize("case", ["truncated-dicom", "huge-png-20000", "zip-bomb"])
def test_bad_input_as_upload_filelike(tmp_path: Path, case: str) -> None:
    _, build, name, expected, _ = next(c for c in CASES if c[0] == case)
    upload = io.BytesIO(build(tmp_path))
    upload.name = name
    with pytest.raises(expected):
        read_any(upload)


def test_a_link_inside_a_folder_does_not_repeat_a_slice(tmp_path: Path) -> None:
    folder = tmp_path / "series"
    folder.mkdir()
    for k in range(3):
        (folder / f"IM{k:04d}.dcm").write_bytes(ct_dicom(z=float(k), series_uid="1.2.3"))
    os.symlink(folder / "IM0001.dcm", folder / "IM0009.dcm")
    assert read_any(folder).n_slices == 3


@pytest.mark.parametrize("syntax", [JPEG_LS_LOSSLESS, JPEG_BASELINE])
def test_whole_jpeg_codestreams_still_read(syntax: str) -> None:
    """The cut-stream cases above fail for the cut, not for the wrapping."""
    assert read_any(dicom_cut_codestream(syntax, keep=1.0), name="x.dcm").shape == (1, 64, 64)


def test_a_small_deflated_dicom_still_reads() -> None:
    v = read_any(deflated_dicom(), name="x.dcm")
    assert v.is_hu and v.shape == (1, 32, 32)


@pytest.mark.parametrize("case", ["tiff-12-pages-of-4096", "zip-of-multipage-tiffs", "dicom-deflated-bomb"])
def test_too_many_pages_are_refused_before_any_is_decoded(tmp_path: Path, case: str) -> None:
    """Counted from the headers (or a bounded inflate): refusing must not cost what reading would take."""
    import tracemalloc

    _, build, name, expected, _ = next(c for c in CASES if c[0] == case)
    data = build(tmp_path)
    tracemalloc.start()
    try:
        with pytest.raises(expected):
            read_any(data, name=name)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024**2, f"{peak / 1024**2:.0f} MB allocated before refusing"


def test_wrong_source_type_is_a_programming_error() -> None:
    with pytest.raises(TypeError):
        read_any(12345)  # type: ignore[arg-type]


def test_unexpected_library_failure_is_wrapped(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever a library throws that the readers did not foresee reaches the UI as CorruptImageError."""
    from ctmodels.imaging import reader

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise KeyError("PixelData")

    monkeypatch.setattr(reader.raster, "read_raster", boom)
    with pytest.raises(CorruptImageError) as info:
        read_any(png())
    assert_readable(str(info.value))


def test_memory_error_becomes_too_large(monkeypatch: pytest.MonkeyPatch) -> None:
    from ctmodels.imaging import reader

    def oom(*args: Any, **kwargs: Any) -> Any:
        raise MemoryError

    monkeypatch.setattr(reader.raster, "read_raster", oom)
    with pytest.raises(ImageTooLargeError):
        read_any(png())


def test_keyboard_interrupt_is_not_swallowed(monkeypatch: pytest.MonkeyPatch) -> None:
    from ctmodels.imaging import reader

    def interrupt(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(reader.raster, "read_raster", interrupt)
    with pytest.raises(KeyboardInterrupt):
        read_any(png())


@pytest.mark.parametrize("container", ["zip", "folder"])
def test_a_series_too_large_is_refused_from_its_headers_before_any_file_is_read_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, container: str
) -> None:
    """A zip of 1999 slices of 512² (10 MB) once cost 2.2 GB before refusing: every member was read and parsed."""
    from ctmodels.imaging import archive
    from ctmodels.imaging.dicom import series as dicom_series  # where check_series_headers reads its limits

    monkeypatch.setattr(dicom_series, "MAX_VOXELS", 10 * 32 * 32)
    slices = {f"IM{k:03d}.dcm": ct_dicom(z=float(k), series_uid="1.2.3") for k in range(11)}
    if container == "zip":
        source: Any = zip_bytes(slices)
        monkeypatch.setattr(archive, "_read_member", lambda *a: pytest.fail("a member was read whole"))
    else:
        source = tmp_path / "series"
        source.mkdir()
        for name, data in slices.items():
            (source / name).write_bytes(data)
        monkeypatch.setattr(Path, "read_bytes", lambda self: pytest.fail(f"{self.name} was read whole"))
    with pytest.raises(ImageTooLargeError, match="counted from their headers") as info:
        read_any(source, name="x.zip" if container == "zip" else None)
    assert_readable(str(info.value))
    monkeypatch.undo()  # the same series, within the real limits, reads
    assert read_any(source, name="x.zip" if container == "zip" else None).n_slices == 11


def test_a_tar_gz_of_a_series_reads_like_its_zip() -> None:
    """Linux tools and some PACS exports hand a series over as .tar.gz (once answered 'not a NIfTI')."""
    slices = {f"s/IM{k}.dcm": ct_dicom(np.full((32, 32), 900 + 10 * k, np.uint16), series_uid="1.2.3", z=float(k))
              for k in range(3)}
    from_zip = read_any(zip_bytes(slices), name="series.zip")
    for mode, name in (("w:gz", "series.tar.gz"), ("w", "series.tar")):
        vol = read_any(tar_of(slices, mode=mode), name=name)
        assert vol.is_hu and vol.shape == from_zip.shape and np.array_equal(vol.array, from_zip.array)


def test_wide_nifti_voxels_read_in_chunks_equal_the_whole_conversion() -> None:
    """float64 and int64 voxels become float32 a chunk at a time (peak memory is measured in the slow hostile-input
    test): the values equal nibabel's, plain and gzipped."""
    rng = np.random.default_rng(7)
    for values in (rng.normal(-400, 400, (40, 48, 37)), rng.integers(-1024, 2000, (40, 48, 37)).astype(np.int64)):
        raw = nifti_typed(values)
        expected = np.asarray(nib.Nifti1Image.from_bytes(raw).get_fdata(), np.float32)
        expected = np.maximum(expected.transpose(2, 1, 0)[::-1, ::-1, ::-1], -1024)
        for data, name in ((raw, "x.nii"), (gzip.compress(raw), "x.nii.gz")):
            assert np.array_equal(read_any(data, name=name).array, expected), name
