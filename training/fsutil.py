"""Crash-safe file writes: temp file or folder in the same directory, fsync, then rename."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any, Callable


def write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=1, default=str))


def replace_dir_atomic(dest: Path, fill: Callable[[Path], None]) -> None:
    """Build a folder with ``fill(tmp)`` and swap it in for ``dest``.

    After a crash at any point either ``dest`` is complete (old or new) or it is missing and
    ``.<name>.old-*`` holds the complete old one, which :func:`recover_dir` puts back.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex[:8]
    tmp = dest.with_name(f".{dest.name}.tmp-{token}")
    old = dest.with_name(f".{dest.name}.old-{token}")
    tmp.mkdir()
    try:
        fill(tmp)
        for f in tmp.rglob("*"):
            if f.is_file():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
        if dest.exists():
            dest.rename(old)
        tmp.rename(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def recover_dir(dest: Path) -> None:
    """Undo an interrupted :func:`replace_dir_atomic` (restore the old folder, drop temp ones)."""
    if not dest.parent.is_dir():
        return
    olds = sorted(dest.parent.glob(f".{dest.name}.old-*"))
    if not dest.exists() and olds:
        olds[-1].rename(dest)
        olds = olds[:-1]
    for p in olds + sorted(dest.parent.glob(f".{dest.name}.tmp-*")):
        shutil.rmtree(p, ignore_errors=True)
