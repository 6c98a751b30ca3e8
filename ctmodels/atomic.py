"""Crash-safe writes, the one home for them: files and whole folders.

Files (:func:`write_bytes_atomic`, :func:`write_text_atomic`, :func:`write_json_atomic`, or
:func:`atomic_file` for writers that want a path): the content goes to a hidden temp file beside the
destination, ``.<name>.<random>.tmp``, which is fsynced and then renamed over the destination. A reader
sees the old file or the new one, never half of one; a crash leaves at most a hidden temp file.

Folders (:func:`replace_dir`): the new folder is built in a hidden temp folder next to the destination,
``.<name>.tmp-<token>``, every file fsynced. Then:

1. if the destination exists it is renamed aside to ``.<name>.old-<token>``;
2. the temp folder is renamed to the destination (the commit point);
3. the old folder is deleted.

Renames within one directory are atomic, so after a crash at any point either the destination
holds a complete folder (old before step 1, new after step 2), or the destination is missing and
``.<name>.old-<token>`` holds the complete old one (crash between 1 and 2). In that last case
:func:`recover_dir` renames the old folder back (a replace that did not reach its commit point did
not happen). Leftover temp folders are never read; :func:`recover_dir` removes those whose writer
process is gone (or, on a shared disk, older than ten minutes).

:func:`create_dir` is the same build-then-rename for a folder that must not exist yet (a new run, a
content-addressed upload): it never replaces anything.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import platform
import shutil
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

log = logging.getLogger(__name__)

TMP_TAG = ".tmp-"
OLD_TAG = ".old-"
#: Temp folders younger than this may belong to a replace still running in another process.
STALE_TMP_SECONDS = 600.0
_HOST = "".join(c if c.isalnum() or c in "._" else "_" for c in platform.node()) or "host"


def fsync_dir(path: Path) -> None:
    """Make a folder's entries (renames, new files) durable; a no-op where the OS refuses."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


# --------------------------------------------------------------------------- files


@contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """A hidden temp path beside ``path`` for a writer that wants a file name (ONNX export, ``np.savez``).

    When the block ends cleanly the temp file is fsynced and renamed onto ``path``; when it raises, the
    temp file is removed and ``path`` is untouched. The temp file exists (empty) when the block starts.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        _fsync_file(tmp)
        os.replace(tmp, path)  # the commit point
        fsync_dir(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink(missing_ok=True)


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a reader (or a crash) never sees half of it."""
    with atomic_file(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` so that a reader (or a crash) never sees half of it."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | Path, data: Any) -> None:
    """Write ``data`` as indented JSON (unknown types as ``str``), atomically."""
    write_text_atomic(path, json.dumps(data, indent=1, default=str))


def read_json(path: str | Path) -> Any:
    """A JSON file's content, or None while it is missing or half-written (readers poll files others write)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


# --------------------------------------------------------------------------- folders


def _fsync_tree(root: Path) -> None:
    for f in root.rglob("*"):
        if f.is_file():
            _fsync_file(f)
        elif f.is_dir():
            fsync_dir(f)
    fsync_dir(root)


def _token() -> str:
    return f"{os.getpid()}@{_HOST}-{uuid.uuid4().hex[:8]}"


def replace_dir(dest: str | Path, fill: Callable[[Path], None]) -> None:
    """Build a folder with ``fill(tmp)`` and swap it in for ``dest`` (module docstring).

    If ``fill`` raises, nothing changes: the temp folder is removed and the error propagates.
    """
    dest = Path(dest)
    parent = dest.parent
    parent.mkdir(parents=True, exist_ok=True)
    token = _token()
    tmp = parent / f".{dest.name}{TMP_TAG}{token}"
    old = parent / f".{dest.name}{OLD_TAG}{token}"
    tmp.mkdir()
    try:
        fill(tmp)
        _fsync_tree(tmp)
        if dest.exists():
            os.replace(dest, old)  # step 1: old aside (destination briefly missing)
            try:
                os.replace(tmp, dest)  # step 2: commit
            except BaseException:
                try:
                    os.replace(old, dest)  # roll back; if this fails too, recover_dir restores it
                except OSError:
                    log.error("could not restore %s after a failed replace; recover_dir() will", dest)
                raise
            fsync_dir(parent)
            shutil.rmtree(old, ignore_errors=True)  # step 3
        else:
            os.replace(tmp, dest)
            fsync_dir(parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def create_dir(dest: str | Path, fill: Callable[[Path], None]) -> None:
    """Build a new folder with ``fill(tmp)`` and rename it to ``dest`` in one step; never replaces.

    A reader (or a crash) sees no ``dest`` or the complete one. Raises :class:`FileExistsError` when
    ``dest`` exists already (checked before and, by the rename itself, at the commit point: a
    non-empty folder is never renamed over). If ``fill`` raises, the temp folder is removed.
    """
    dest = Path(dest)
    parent = dest.parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = parent / f".{dest.name}{TMP_TAG}{_token()}"
    tmp.mkdir()
    try:
        fill(tmp)
        _fsync_tree(tmp)
        if dest.exists():
            raise FileExistsError(errno.EEXIST, "will not replace an existing folder", str(dest))
        try:
            os.rename(tmp, dest)  # the commit point; fails (ENOTEMPTY/EEXIST) onto a folder that has entries
        except OSError as exc:
            if dest.exists():
                raise FileExistsError(errno.EEXIST, "will not replace an existing folder", str(dest)) from exc
            raise
        fsync_dir(parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _siblings(dest: Path, tag: str) -> list[Path]:
    parent = dest.parent
    if not parent.is_dir():
        return []
    prefix = f".{dest.name}{tag}"
    return [p for p in parent.iterdir() if p.name.startswith(prefix) and p.is_dir()]


def recover_dir(dest: str | Path, complete: Callable[[Path], bool] = lambda p: True) -> None:
    """Undo an interrupted :func:`replace_dir`: put the old folder back, clear leftovers.

    ``complete`` says whether a set-aside folder is whole enough to restore (a checkpoint: it has its card).
    """
    dest = Path(dest)
    if not dest.exists():
        olds = [p for p in _siblings(dest, OLD_TAG) if complete(p)]
        if olds:
            newest = max(olds, key=lambda p: p.stat().st_mtime)
            try:
                os.replace(newest, dest)
                log.warning("restored %s from %s left by an interrupted save", dest, newest.name)
            except OSError as exc:
                log.warning("could not restore %s from %s: %s", dest, newest.name, exc)
    if dest.exists():
        for p in _siblings(dest, OLD_TAG):
            shutil.rmtree(p, ignore_errors=True)
    now = time.time()
    for p in _siblings(dest, TMP_TAG):
        try:
            alive = _writer_alive(p.name)
            if alive is False or (alive is None and now - p.stat().st_mtime > STALE_TMP_SECONDS):
                shutil.rmtree(p, ignore_errors=True)
        except OSError:
            pass


def _writer_alive(tmp_name: str) -> bool | None:
    """Whether the temp folder's writer (token ``<pid>@<host>-<hex>``) is a live process of this host.

    None when that cannot be told: a writer on another host (a shared workspace) or a name without a
    token; the age rule clears theirs. A live writer of this host keeps its folder however long it
    takes (a phantom dataset build writes for minutes).
    """
    owner = tmp_name.rsplit(TMP_TAG, 1)[-1].rsplit("-", 1)[0]
    pid_text, _, host = owner.partition("@")
    if host != _HOST or not pid_text.isdigit():
        return None
    if int(pid_text) == os.getpid():
        return True
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists but not ours (EPERM): alive
        return True
    return True
