"""Training steps side by side (``training.jobs.lanes``): each in its own process with its share of the cores, and a
model set's students trained that way are the models the same step trains alone."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from training.jobs.lanes import lane_count, run_in_lanes
from training.jobs.registry import RunStore


def test_lanes_run_each_job_in_another_process_with_its_share_of_the_cores(monkeypatch) -> None:
    monkeypatch.setenv("CTSS_THREADS", "4")
    finished: list[int] = []
    got = run_in_lanes([(os.getenv, ("CTSS_THREADS",)), (os.getpid, ()), (os.getenv, ("CTSS_LANES",))],
                       2, lambda i, result: finished.append(i))
    assert got[0] == "2"  # 4 cores, 2 lanes
    assert got[1] != os.getpid()
    assert got[2] == "1"  # a lane opens no lanes of its own
    assert sorted(finished) == [0, 1, 2]


def test_a_failed_job_is_raised_and_the_finished_ones_are_kept() -> None:
    finished: list[int] = []
    with pytest.raises(ValueError, match="not a number"):
        run_in_lanes([(os.getpid, ()), (int, ("not a number",)), (os.getpid, ())], 1,
                     lambda i, result: finished.append(i))
    assert 0 in finished and 1 not in finished


def test_lane_count_follows_the_setting_and_the_cores(monkeypatch) -> None:
    monkeypatch.setenv("CTSS_LANES", "3")
    assert lane_count() == 3
    monkeypatch.delenv("CTSS_LANES")
    monkeypatch.setenv("CTSS_THREADS", "1")
    assert lane_count() == 1  # one core for training: one step at a time
    monkeypatch.setenv("CTSS_THREADS", "2")
    assert lane_count() == 2


def test_a_set_build_trains_the_students_side_by_side_as_each_would_train_alone(tmp_path: Path, workspace, real_data,
                                                                                 monkeypatch) -> None:
    """The baseline first, then kd and ghost_kd in two lanes of one thread each: both published, the report in the
    recipe's order, and kd's weights equal to kd trained alone in this process on one thread."""
    from ctmodels.checkpoint import is_checkpoint
    from training.engine.pipeline import execute
    from training.recipes import model_set
    from training.recipes.real import REAL

    monkeypatch.setenv("CTSS_THREADS", "2")
    folder = tmp_path / "real"
    recipe = dataclasses.replace(REAL, steps=[(k, s) for k, s in REAL.steps if k in ("baseline", "kd", "ghost_kd")],
                                 folder=lambda: folder)
    monkeypatch.setattr(model_set, "serve", lambda f: {})
    records: list[dict] = []
    report = model_set.build(recipe, quick=True, store=RunStore(tmp_path / "store"), progress=records.append, lanes=2)
    assert report["lanes"] == 2
    assert [r["model"] for r in report["models"]] == ["baseline", "kd", "ghost_kd"]
    assert all(is_checkpoint(folder / k) for k in ("baseline", "kd", "ghost_kd"))
    assert any(r["stage"].startswith("training kd, ghost_kd (2 at a time)") for r in records)

    monkeypatch.setenv("CTSS_THREADS", "1")
    alone = execute(model_set.config_for(recipe, "kd", True, folder / "baseline"), store=RunStore(tmp_path / "alone"))
    assert (alone.model_dir / "weights.safetensors").read_bytes() == (folder / "kd" / "weights.safetensors").read_bytes()
