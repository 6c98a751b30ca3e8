"""Crash-safe folder replace, used for checkpoints and for training states.

The new folder is built in a hidden temp folder next to the destination, ``.<name>.tmp-<token>``,
every file fsynced. Then:

1. if the destination exists it is renamed aside to ``.<name>.old-<token>``;
2. the temp folder is renamed to the destination (the commit point);
3. the old folder is deleted.

Renames within one directory are atomic, so after a crash at any point either the destination
holds a complete folder (old before step 1, new after step 2), or the destination is missing and
``.<name>.old-<token>`` holds the complete old one (crash between 1 and 2). In that last case
:func:`recover_dir` renames the old folder back (a replace that did not reach its commit point did
not happen). Leftover temp folders are never read; :func:`recover_dir` removes those whose writer
process is gone (or, on a shared disk, older than ten minutes).
"""

from __future__ import annotations

import logging
import os
import platform
import shutil
import time
import uuid
from pathlib import Path
from typing import Callable

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


def _fsync_tree(root: Path) -> None:
    for f in root.rglob("*"):
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
    fsync_dir(root)


def replace_dir(dest: Path, fill: Callable[[Path], None]) -> None:
    """Build a folder with ``fill(tmp)`` and swap it in for ``dest`` (module docstring)."""
    dest = Path(dest)
    parent = dest.parent
    parent.mkdir(parents=True, exist_ok=True)
    token = f"{os.getpid()}@{_HOST}-{uuid.uuid4().hex[:8]}"
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


def _siblings(dest: Path, tag: str) -> list[Path]:
    parent = dest.parent
    if not parent.is_dir():
        return []
    prefix = f".{dest.name}{tag}"
    return [p for p in parent.iterdir() if p.name.startswith(prefix) and p.is_dir()]


def recover_dir(dest: Path, complete: Callable[[Path], bool] = lambda p: True) -> None:
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
            if _writer_is_dead(p.name) or now - p.stat().st_mtime > STALE_TMP_SECONDS:
                shutil.rmtree(p, ignore_errors=True)
        except OSError:
            pass


def _writer_is_dead(tmp_name: str) -> bool:
    """True when the temp folder's writer (token ``<pid>@<host>-<hex>``) was a process of this host that is gone.

    Writers on other hosts (a shared workspace) are never judged here; the age rule clears theirs.
    """
    owner = tmp_name.rsplit(TMP_TAG, 1)[-1].rsplit("-", 1)[0]
    pid_text, _, host = owner.partition("@")
    if host != _HOST or not pid_text.isdigit() or int(pid_text) == os.getpid():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except OSError:  # exists but not ours (EPERM): alive
        return False
    return False
