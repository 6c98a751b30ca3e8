"""A dataset zip kept for training is unpacked whole under its hash, or not at all."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from ctmodels.datasets import open_dataset
from ui.uploads import save_dataset_zip


class Upload:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def getvalue(self) -> bytes:
        return self.data


def _zip(folder: Path, top: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for f in sorted(folder.rglob("*")):
            if f.is_file():
                z.write(f, f"{top}/{f.relative_to(folder)}")
    return buf.getvalue()


def test_a_dataset_zip_is_unpacked_once_and_found_again(small_phantoms: Path, tmp_path: Path) -> None:
    upload = Upload(_zip(small_phantoms / "kaggle", "covid19-ct-scans"))
    first = save_dataset_zip(upload, tmp_path)
    assert first.name == "covid19-ct-scans" and len(open_dataset(first)) > 0
    assert save_dataset_zip(upload, tmp_path) == first  # the same zip again: the same dataset folder
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_a_zip_that_is_not_a_dataset_leaves_nothing(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("notes/readme.txt", "hello")
    with pytest.raises(ValueError, match="not a dataset"):
        save_dataset_zip(Upload(buf.getvalue()), tmp_path)
    assert list(tmp_path.iterdir()) == []
