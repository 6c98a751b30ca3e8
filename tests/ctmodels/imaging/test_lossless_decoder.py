"""Lossless JPEG CT decoded by libjpeg-turbo (``dicom.lossless``) equals what pydicom decodes, bit for bit,
for the cases a CT archive holds (12/16 bits stored, signed or not, a 16-bit JPEG holding 12-bit data), and
declines what it should leave to pydicom."""

from __future__ import annotations

import imagecodecs
import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian, JPEGLosslessSV1

from ctmodels.imaging.dicom import pixels
from ctmodels.imaging.dicom.lossless import decode_lossless
from ctmodels.imaging.reader import read_bytes
from tests.conftest import p002_zip


def _lossless(stored: np.ndarray, bits: int, signed: bool, precision: int) -> Dataset:
    code = imagecodecs.jpeg8_encode(stored, lossless=True, predictor=1, bitspersample=precision)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = JPEGLosslessSV1
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits, bits - 1, int(signed)
    ds.PixelData = encapsulate([code])
    ds["PixelData"].VR = "OB"
    return ds


@pytest.mark.parametrize("bits,signed,precision", [(12, False, 12), (16, False, 16), (12, True, 12),
                                                   (16, True, 16), (12, True, 16), (12, False, 16)])
def test_equals_pydicom(bits, signed, precision):
    rng = np.random.default_rng(bits + precision + signed)
    stored = rng.integers(0, 1 << precision, size=(48, 40)).astype(np.uint16)
    ds = _lossless(stored, bits, signed, precision)
    ours = decode_lossless(ds)
    assert ours is not None and ours.shape == (1, 48, 40)
    assert ours.dtype == ds.pixel_array.dtype and np.array_equal(ours[0], ds.pixel_array)


def test_declines_what_pydicom_should_decode():
    stored = np.arange(48 * 40, dtype=np.uint16).reshape(48, 40) % 4096
    ds = _lossless(stored, 12, False, 12)
    ds.BitsStored = 16  # a JPEG of lower precision than the header states
    assert decode_lossless(ds) is None
    damaged = _lossless(stored, 12, False, 12)
    damaged.PixelData = encapsulate([b"\xff\xd8\xff\xc3\x00\x0b\x0c" + b"\x00" * 20])
    assert decode_lossless(damaged) is None
    plain = Dataset()
    plain.file_meta = FileMetaDataset()
    plain.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    assert decode_lossless(plain) is None


def test_p002_reads_the_same_with_either_decoder(real_data, monkeypatch):
    data = p002_zip(real_data)
    fast = read_bytes(data, "P002.zip")
    monkeypatch.setattr(pixels, "decode_lossless", lambda ds: None)
    slow = read_bytes(data, "P002.zip")
    assert fast.array.dtype == slow.array.dtype and np.array_equal(fast.array, slow.array)
