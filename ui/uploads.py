"""Datasets uploaded as a zip for training: unpacked safely into the workspace (the user asked to keep them)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from ctmodels.atomic import create_dir, recover_dir
from ctmodels.datasets import DatasetError, open_dataset
from ctmodels.imaging.archive import read_zip


def save_dataset_zip(uploaded, root: Path) -> Path:
    """Unpack an uploaded dataset zip under ``root/<hash>`` (zip-slip, links and bombs refused)."""
    data = uploaded.getvalue()
    digest = hashlib.sha256(data).hexdigest()[:16]
    dest = root / digest
    if dest.is_dir():
        return _single_root(dest)
    members = read_zip(data, keep_all=True)

    def fill(tmp: Path) -> None:
        for name, blob in members:
            out = (tmp / name).resolve()
            if tmp.resolve() not in out.parents:
                raise ValueError("the zip holds a path outside its folder")
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(blob)
        try:
            open_dataset(_single_root(tmp))
        except DatasetError as exc:
            raise ValueError(f"the zip is not a dataset: {exc}") from exc

    recover_dir(dest)  # clears what an upload killed mid-unpack left
    try:
        create_dir(dest, fill)  # a half-unpacked dataset is never visible under its name
    except FileExistsError:
        pass  # the same zip, unpacked meanwhile by another session: same content
    return _single_root(dest)


def _single_root(folder: Path) -> Path:
    """A zip of one top-level folder holds the dataset inside that folder."""
    entries = [p for p in folder.iterdir() if not p.name.startswith((".", "__MACOSX"))]
    return entries[0] if len(entries) == 1 and entries[0].is_dir() else folder
