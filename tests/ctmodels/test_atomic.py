"""The one home of crash-safe writes (files and folders) and of "which folders hold a checkpoint"."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ctmodels import atomic
from ctmodels.atomic import (atomic_file, create_dir, read_json, recover_dir, replace_dir, write_bytes_atomic,
                             write_json_atomic, write_text_atomic)
from ctmodels.checkpoint import CARD_NAME, checkpoints_in, is_checkpoint


def hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# --------------------------------------------------------------------------- files


def test_file_writes_round_trip_and_leave_no_temp_files(tmp_path: Path) -> None:
    write_json_atomic(tmp_path / "a" / "x.json", {"n": 1, "p": tmp_path})
    assert read_json(tmp_path / "a" / "x.json") == {"n": 1, "p": str(tmp_path)}
    write_text_atomic(tmp_path / "t.txt", "héllo")
    assert (tmp_path / "t.txt").read_text(encoding="utf-8") == "héllo"
    write_bytes_atomic(tmp_path / "t.txt", b"\x00\x01")
    assert (tmp_path / "t.txt").read_bytes() == b"\x00\x01"
    assert hidden(tmp_path) == [] and hidden(tmp_path / "a") == []


def test_read_json_is_none_while_missing_or_half_written(tmp_path: Path) -> None:
    assert read_json(tmp_path / "missing.json") is None
    (tmp_path / "half.json").write_text('{"n": ')
    assert read_json(tmp_path / "half.json") is None


def test_a_writer_that_fails_leaves_the_old_file_and_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "model.onnx"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_file(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".model.onnx.")
        tmp.write_bytes(b"half")
        raise RuntimeError("killed mid-write")
    assert target.read_bytes() == b"old" and hidden(tmp_path) == []


# --------------------------------------------------------------------------- folders


def test_create_dir_builds_a_new_folder_and_never_replaces(tmp_path: Path) -> None:
    dest = tmp_path / "run"
    create_dir(dest, lambda tmp: (tmp / "config.json").write_text("{}"))
    assert (dest / "config.json").read_text() == "{}"
    with pytest.raises(FileExistsError):
        create_dir(dest, lambda tmp: (tmp / "other.json").write_text("{}"))
    assert sorted(p.name for p in dest.iterdir()) == ["config.json"]

    def broken(tmp: Path) -> None:
        (tmp / "part").write_text("x")
        raise ValueError("not a dataset")

    with pytest.raises(ValueError):
        create_dir(tmp_path / "upload", broken)
    assert not (tmp_path / "upload").exists() and hidden(tmp_path) == []


def test_replace_dir_with_a_failing_fill_changes_nothing(tmp_path: Path) -> None:
    dest = tmp_path / "set"
    replace_dir(dest, lambda tmp: (tmp / "v").write_text("1"))

    def broken(tmp: Path) -> None:
        raise OSError("disk full")

    with pytest.raises(OSError):
        replace_dir(dest, broken)
    assert (dest / "v").read_text() == "1" and hidden(tmp_path) == []


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_recover_dir_keeps_a_live_writers_temp_folder_however_old(tmp_path: Path) -> None:
    """A long build (a phantom dataset) by a live process of this host is never cleared; a dead one's is."""
    dest = tmp_path / "demo"
    live = tmp_path / f".demo{atomic.TMP_TAG}{os.getpid()}@{atomic._HOST}-0000aaaa"
    dead = tmp_path / f".demo{atomic.TMP_TAG}{_dead_pid()}@{atomic._HOST}-0000bbbb"
    foreign = tmp_path / f".demo{atomic.TMP_TAG}1@another-host-0000cccc"
    for p in (live, dead, foreign):
        p.mkdir()
    old = time.time() - 2 * atomic.STALE_TMP_SECONDS
    os.utime(live, (old, old))
    recover_dir(dest)
    assert live.exists() and not dead.exists() and foreign.exists()  # a fresh foreign one may be running
    os.utime(foreign, (old, old))
    recover_dir(dest)
    assert live.exists() and not foreign.exists()


# --------------------------------------------------------------------------- finding checkpoints


def _fake_checkpoint(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / CARD_NAME).write_text("{}")
    return folder


def test_checkpoints_in_lists_checkpoint_folders_only(tmp_path: Path) -> None:
    assert checkpoints_in(tmp_path / "missing") == []
    kd = _fake_checkpoint(tmp_path / "kd")
    base = _fake_checkpoint(tmp_path / "baseline")
    _fake_checkpoint(tmp_path / ".baseline.publishing")  # left by an older publish
    _fake_checkpoint(tmp_path / f".kd{atomic.TMP_TAG}{os.getpid()}@{atomic._HOST}-0000aaaa")  # a save in progress
    (tmp_path / "real").mkdir()  # the real-CT set's folder: no card of its own
    (tmp_path / "notes").mkdir()
    (tmp_path / "demo_report.json").write_text("{}")
    assert checkpoints_in(tmp_path) == [base, kd]
    assert is_checkpoint(kd) and not is_checkpoint(tmp_path / "real") and not is_checkpoint(kd / CARD_NAME)


def test_checkpoints_in_puts_back_a_checkpoint_a_crash_left_set_aside(tmp_path: Path) -> None:
    aside = _fake_checkpoint(tmp_path / f".ghost{atomic.OLD_TAG}{_dead_pid()}@{atomic._HOST}-0000dddd")
    assert checkpoints_in(tmp_path) == [tmp_path / "ghost"]
    assert not aside.exists() and hidden(tmp_path) == []
