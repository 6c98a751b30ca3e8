"""A generated corpus of malformed inputs: mutated DICOM headers and pixel data, wrong transfer syntaxes,
truncated NIfTI, mismatched dims, NaN/inf voxels, 16-bit and RGBA PNG, CMYK JPEG, decompression bombs,
zip bombs, zip-slip paths, symlinks in zips, nested zips, 5 GB declared sizes (≥ 200 inputs)."""

from __future__ import annotations

import gzip
import io
import random
import struct
import zipfile
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from PIL import Image
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ImplicitVRLittleEndian, JPEG2000, JPEGBaseline8Bit,
    JPEGLossless, RLELossless,
)

from tests.builders import ct_dicom, zip_bytes


def _dicom_bytes(ds: pydicom.Dataset, transfer_syntax: str | None = None) -> bytes:
    """Serialise ``ds`` as explicit little endian, optionally *claiming* another transfer syntax."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset, write_file_meta_info

    meta = ds.file_meta
    if transfer_syntax is not None:
        meta = pydicom.dataset.FileMetaDataset(ds.file_meta)
        meta.TransferSyntaxUID = transfer_syntax
    body = pydicom.Dataset(ds)
    body.file_meta = pydicom.dataset.FileMetaDataset()
    out = DicomBytesIO()
    out.is_little_endian, out.is_implicit_VR = True, False
    out.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(out, meta, enforce_standard=False)
    write_dataset(out, body)
    return out.getvalue()


def _png(arr: np.ndarray, mode: str | None = None) -> bytes:
    out = io.BytesIO()
    Image.fromarray(arr).save(out, format="PNG")  # mode follows the dtype/shape (uint16 → I;16)
    return out.getvalue()


def _png_bomb(side: int) -> bytes:
    """A valid all-black 1-bit PNG of side x side pixels, written directly: Pillow's encoder takes 12 s for 65535²
    (a tenth of the corpus's build), zlib at level 1 under 2 s; the file is the same kind of bomb."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    row = b"\0" * (1 + (side + 7) // 8)  # filter byte 0, then the packed bits
    deflate, rows_per_chunk = zlib.compressobj(1), 1024
    idat = [deflate.compress(row * min(rows_per_chunk, side - k)) for k in range(0, side, rows_per_chunk)]
    idat.append(deflate.flush())
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"".join(idat)) + chunk(b"IEND", b"")


def _declared_size_zip(size: int) -> bytes:
    """A zip whose central directory claims a huge uncompressed size for a small member."""
    raw = bytearray(zip_bytes({"big.dcm": b"\0" * 1000}))
    cd = raw.rfind(b"PK\x01\x02")
    struct.pack_into("<I", raw, cd + 24, min(size, 0xFFFFFFFF))
    lh = raw.find(b"PK\x03\x04")
    struct.pack_into("<I", raw, lh + 22, min(size, 0xFFFFFFFF))
    return bytes(raw)


def _nifti(data: np.ndarray, dtype=np.int16) -> bytes:
    return nib.Nifti1Image(data.astype(dtype), np.eye(4)).to_bytes()


def build(seed_dicom: Path, seed_nifti: Path, seed_png: Path) -> list[tuple[str, bytes]]:
    """(name, bytes) pairs; names carry the extension a user might give the file."""
    rng = random.Random(1234)
    good = seed_dicom.read_bytes()
    items: list[tuple[str, bytes]] = []

    # --- DICOM: byte flips in the header and in the pixel data, truncations (80)
    pix_at = good.rfind(b"\xe0\x7f\x10\x00")
    for k in range(30):
        b = bytearray(good)
        for _ in range(rng.randint(1, 8)):
            b[rng.randrange(132, min(pix_at, len(b)))] = rng.randrange(256)
        items.append((f"hdrflip{k}.dcm", bytes(b)))
    for k in range(20):
        b = bytearray(good)
        for _ in range(rng.randint(1, 50)):
            b[rng.randrange(pix_at + 12, len(b))] = rng.randrange(256)
        items.append((f"pixflip{k}.dcm", bytes(b)))
    for k in range(30):
        items.append((f"trunc{k}.dcm", good[: rng.randrange(0, len(good))]))

    # --- DICOM: wrong transfer syntax for raw pixels, inconsistent image attributes (24)
    for k, ts in enumerate([JPEGBaseline8Bit, JPEG2000, RLELossless, JPEGLossless, DeflatedExplicitVRLittleEndian,
                            ExplicitVRBigEndian, ImplicitVRLittleEndian, "1.2.3.4.5.6"]):
        ds = pydicom.dcmread(seed_dicom)
        items.append((f"ts{k}.dcm", _dicom_bytes(ds, ts)))
    mutations = [
        ("Rows", 65535), ("Columns", 65535), ("Rows", 0), ("Columns", 1), ("BitsAllocated", 32), ("BitsAllocated", 8),
        ("BitsAllocated", 1), ("SamplesPerPixel", 3), ("NumberOfFrames", 100000), ("PixelRepresentation", 1),
        ("RescaleSlope", "nan"), ("RescaleIntercept", "inf"), ("PhotometricInterpretation", "RGB"),
        ("Modality", "MR"), ("Modality", "OT"), ("PixelSpacing", ["0", "0"]),
    ]
    for k, (tag, value) in enumerate(mutations):
        ds = pydicom.dcmread(seed_dicom)
        setattr(ds, tag, value)
        items.append((f"attr{k}.dcm", _dicom_bytes(ds)))
    ds = pydicom.dcmread(seed_dicom)
    del ds.PixelData
    items.append(("nopix.dcm", _dicom_bytes(ds)))

    # --- NIfTI: truncations, mismatched dims, NaN/inf, 4-D, huge declared sizes (40)
    nii = seed_nifti.read_bytes()
    for k in range(12):
        items.append((f"nii_trunc{k}.nii", nii[: rng.randrange(0, len(nii))]))
    for k in range(6):
        b = bytearray(nii)
        struct.pack_into("<h", b, 42 + 2 * rng.randint(0, 2), rng.choice([0, -5, 32767, 1, 9999]))  # dim[1..3]
        items.append((f"nii_dims{k}.nii", bytes(b)))
    for k, dims in enumerate([(2**15 - 1, 2**15 - 1, 2**15 - 1), (30000, 30000, 1), (1, 1, 1)]):
        b = bytearray(nii)
        struct.pack_into("<hhh", b, 42, *dims)
        items.append((f"nii_declared{k}.nii", bytes(b)))
    for k in range(6):
        b = bytearray(nii)
        b[rng.randrange(0, 348)] = rng.randrange(256)
        items.append((f"nii_hdrflip{k}.nii", bytes(b)))
    f32 = np.random.default_rng(0).normal(-500, 300, (32, 32, 8)).astype(np.float32)
    for k, frac in enumerate([0.001, 0.5, 1.0]):
        d = f32.copy()
        d.flat[: int(frac * d.size)] = np.nan
        items.append((f"nii_nan{k}.nii", _nifti(d, np.float32)))
    d = f32.copy()
    d[0, 0, 0] = np.inf
    d[1, 1, 1] = -np.inf
    items.append(("nii_inf.nii", _nifti(d, np.float32)))
    items.append(("nii_4d.nii", _nifti(np.zeros((16, 16, 4, 3)))))
    items.append(("nii_5d.nii", _nifti(np.zeros((8, 8, 2, 2, 2)))))
    items.append(("nii_gz_trunc.nii.gz", gzip.compress(nii)[:-500]))
    items.append(("nii_gz_bomb.nii.gz", gzip.compress(b"\0" * (50 * 2**20))))
    items.append(("nii_1px.nii", _nifti(np.zeros((1, 1, 1)))))
    items.append(("nii_line.nii", _nifti(np.zeros((1, 256, 1)))))
    for k, dt in enumerate([np.uint8, np.float64, np.int32, np.complex64]):
        items.append((f"nii_dtype{k}.nii", nib.Nifti1Image(np.zeros((16, 16, 4), dt), np.eye(4)).to_bytes()))

    # --- raster: 16-bit, RGBA, palette, CMYK JPEG, bombs, truncations, CRC damage (36)
    png = seed_png.read_bytes()
    arr = np.asarray(Image.open(seed_png))
    items.append(("sixteen.png", _png((arr.astype(np.uint16) * 257), "I;16")))
    items.append(("rgba.png", _png(np.dstack([arr, arr, arr, np.full_like(arr, 128)]), "RGBA")))
    items.append(("palette.png", _encode(Image.fromarray(arr).convert("P"), "PNG")))
    items.append(("bilevel.png", _encode(Image.fromarray(arr).convert("1"), "PNG")))
    items.append(("cmyk.jpg", _encode(Image.fromarray(np.dstack([arr] * 3)).convert("CMYK"), "JPEG")))
    items.append(("gray.jpg", _encode(Image.fromarray(arr), "JPEG")))
    items.append(("prog.jpg", _encode(Image.fromarray(arr), "JPEG", progressive=True)[:-200]))
    items.append(("tiff16.tif", _encode(Image.fromarray(arr.astype(np.uint16) * 100), "TIFF")))
    for k, side in enumerate([20000, 50000, 65535]):
        items.append((f"bomb{k}.png", _png_bomb(side)))
    items.append(("bomb.gif", _encode(Image.new("P", (8192, 8192)), "GIF")))  # 4x the app's 4096² limit
    for k in range(12):
        items.append((f"png_trunc{k}.png", png[: rng.randrange(8, len(png))]))
    for k in range(12):
        b = bytearray(png)
        for _ in range(rng.randint(1, 6)):
            b[rng.randrange(8, len(b))] = rng.randrange(256)
        items.append((f"png_flip{k}.png", bytes(b)))

    # --- archives: bombs, zip-slip, symlinks, nested, declared 5 GB, empty, encrypted, mixed (24)
    items.append(("bomb.zip", zip_bytes({"a.dcm": b"\0" * (200 * 2**20)})))
    items.append(("slip.zip", zip_bytes({"../../etc/passwd.dcm": good})))
    items.append(("slip_abs.zip", zip_bytes({"/tmp/x.dcm": good})))
    items.append(("slip_win.zip", zip_bytes({"C:\\\\evil.dcm": good})))
    link = zipfile.ZipInfo("link.dcm")
    link.external_attr = (0o120777 << 16)
    items.append(("symlink.zip", zip_bytes({link: b"/etc/passwd"})))
    inner = zip_bytes({"a.dcm": good})
    items.append(("nested.zip", zip_bytes({"inner.zip": inner})))
    items.append(("nested_deep.zip", zip_bytes({"x.zip": zip_bytes({"y.zip": inner})})))
    items.append(("nested_renamed.zip", zip_bytes({"inner.dcm": inner})))
    items.append(("declared5gb.zip", _declared_size_zip(5 * 2**30)))
    items.append(("empty.zip", zip_bytes({})))
    items.append(("txt_only.zip", zip_bytes({"readme.txt": b"hello"})))
    items.append(("two_series.zip", zip_bytes({"a.dcm": good, "b.dcm": _second_series(seed_dicom)})))
    items.append(("dicom_and_nifti.zip", zip_bytes({"a.dcm": good, "b.nii": nii})))
    items.append(("png_sizes.zip", zip_bytes({"1.png": png, "2.png": _png(np.zeros((40, 30), np.uint8))})))
    items.append(("zip_trunc.zip", zip_bytes({"a.dcm": good})[:-40]))
    b = bytearray(zip_bytes({"a.dcm": good}))
    b[8] = 0x63  # unknown compression method
    items.append(("zip_method.zip", bytes(b)))
    enc = bytearray(zip_bytes({"a.dcm": good}))
    struct.pack_into("<H", enc, 6, 1)  # the 'encrypted' flag in the local header
    cd = enc.rfind(b"PK\x01\x02")
    struct.pack_into("<H", enc, cd + 8, 1)
    items.append(("encrypted.zip", bytes(enc)))
    many = zip_bytes({f"{i}.txt": b"x" for i in range(6000)})
    items.append(("many.zip", many))
    items.append(("garbage_named.zip", bytes(rng.randrange(256) for _ in range(5000))))
    items.append(("pk_prefix.zip", b"PK\x03\x04" + bytes(2000)))

    # --- anything else a user might send (14)
    items += [("empty.dcm", b""), ("text.png", b"not a picture\n" * 20), ("html.dcm", b"<html><body>hi</body></html>"),
              ("pdf.png", b"%PDF-1.4\n" + bytes(500)), ("exe.nii", b"MZ" + bytes(1000)), ("gz_text.nii.gz", gzip.compress(b"hello")),
              ("random.bin", bytes(rng.randrange(256) for _ in range(3000))), ("dicm_only.dcm", bytes(128) + b"DICM"),
              ("dicm_junk.dcm", bytes(128) + b"DICM" + bytes(rng.randrange(256) for _ in range(500))),
              ("json.dcm", b'{"a": 1}'), ("noext", good), ("upper.DCM", good), ("good.png", png), ("good.nii", nii)]
    return items


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    out = io.BytesIO()
    img.save(out, format=fmt, **kw)
    return out.getvalue()


def _second_series(seed: Path) -> bytes:
    ds = pydicom.dcmread(seed)
    ds.SeriesInstanceUID = pydicom.uid.generate_uid()
    return _dicom_bytes(ds)


def _slices_zip(n: int, side: int, noise_rows: int = 0) -> bytes:
    """``n`` CT slices of zeros, each with ``noise_rows`` random rows (which keep the zip's ratio believable)."""
    rng = np.random.default_rng(5)
    members = {}
    for k in range(n):
        pixels = np.zeros((side, side), np.uint16)
        pixels[:noise_rows] = rng.integers(0, 4096, (noise_rows, side))
        members[f"IM{k:05d}.dcm"] = ct_dicom(pixels, z=float(-k), series_uid="1.2.3", instance=k + 1)
    return zip_bytes(members)


def issue_inputs() -> list[tuple[str, bytes]]:
    """The small uploads that made the server allocate gigabytes (issue 16's table), at the issue's sizes."""
    from tests.ctmodels.imaging.test_bad_input import deflated_dicom, tiff_pages

    many_pages = tiff_pages(1999, 64)
    gz = io.BytesIO()
    with gzip.GzipFile(fileobj=gz, mode="wb", compresslevel=6) as f:
        f.write(nib.Nifti1Image(np.full((4096, 4096, 9), -1000, np.int16), np.eye(4)).to_bytes())
    return [
        ("zip_40_tiffs_1999_pages.zip", zip_bytes({f"stack{k:02d}.tif": many_pages for k in range(40)})),
        ("tiff_300_pages_4096.tif", tiff_pages(300, 4096)),
        ("deflated_2gb.dcm", deflated_dicom(2 << 30)),
        ("zip_1999_zero_512_slices.zip", _slices_zip(1999, 512)),
        ("zip_1999_512_slices_believable_ratio.zip", _slices_zip(1999, 512, noise_rows=4)),
        ("zip_2000_zero_1mib_members.zip", zip_bytes({f"m{k:04d}.dcm": bytes(1 << 20) for k in range(2000)})),
        ("nifti_9x4096.nii.gz", gz.getvalue()),
        ("nifti_float64_151m_voxels.nii.gz", _float64_nifti_gz((512, 512, 576), -1000.0)),
        ("nifti_bgzip_members.nii.gz", _bgzip(nib.Nifti1Image(
            np.random.default_rng(6).integers(-1024, 400, (512, 512, 40), dtype=np.int16), np.eye(4)).to_bytes())),
    ]


def _float64_nifti_gz(shape: tuple[int, int, int], value: float) -> bytes:
    """A small .nii.gz of float64 voxels (151 M of them: 1.2 GB inflated, ~1.2 MB packed), written a slab at a
    time so the test does not hold the volume it describes."""
    header = nib.Nifti1Header()
    header.set_data_dtype(np.float64)
    header.set_data_shape(shape)
    header.set_qform(np.eye(4), code=1)
    header.set_sform(np.eye(4), code=1)
    header["vox_offset"] = 352
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=9) as f:
        f.write(header.binaryblock + b"\0" * 4)
        slab = np.full(shape[0] * shape[1], value, np.float64).tobytes()
        for _ in range(shape[2]):
            f.write(slab)
    return out.getvalue()


def _bgzip(data: bytes, block: int = 65280) -> bytes:
    """Many gzip members of at most 64 KB each, as bgzip writes them."""
    return b"".join(gzip.compress(data[i:i + block]) for i in range(0, len(data), block))
