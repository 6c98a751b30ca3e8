"""The one progress channel: runs, cross-validations and model-set builds write one record shape,
a job made of runs mirrors its own process's running step, and the app draws every record one way."""

from __future__ import annotations

import json
import os
import time

from ctmodels.atomic import read_json
from tests.builders import wait_until
from training.config import RunConfig
from training.jobs.progress import Mirror, set_progress_path, writer
from training.jobs.registry import RunStore
from ui.progress import describe, fraction


def _running(store: RunStore, pid: int, stage: str, epoch: int):
    run = store.create(RunConfig(), status="running")
    store.update(run.id, pid=pid)
    run.progress_path.write_text(json.dumps({"stage": stage, "epoch": epoch, "epochs": 4, "batch": 5,
                                             "batches": 10, "images_per_s": 12.5}))
    return run


def _mirrored(store: RunStore, stage: str) -> tuple[list[dict], dict]:
    """The records a mirror wrote under ``stage`` (step 2 of 6) until one mirrored the running steps, and that one."""
    records: list[dict] = []
    mirror = Mirror(records.append, every_s=0.05)
    try:
        mirror.point(store, {"stage": stage, "unit": "step", "epoch": 2, "epochs": 6})
        inner = wait_until(lambda: next((r for r in records if "·" in r["stage"]), None), 30,
                           "a record mirroring the running steps", interval=0.05)
    finally:
        mirror.close()
    return records, inner


def test_mirror_follows_the_step_this_process_runs(tmp_path):
    store = RunStore(tmp_path / "ws")
    _running(store, 1, "someone else's run", 1)  # another process's run in the same registry
    _running(store, os.getpid(), "train", 2)
    records, inner = _mirrored(store, "training ghost")
    assert records[0]["stage"] == "training ghost" and records[0]["batch"] == 0
    assert inner["stage"] == "training ghost · train epoch 2/4" and "someone else" not in inner["stage"]
    assert inner["batch"] == 375 and inner["batches"] == 1000  # (1 + 5/10) of 4 epochs
    assert fraction(inner) == (1 + 0.375) / 6
    assert describe(inner).startswith("training ghost · train epoch 2/4: step 2/6")


def test_mirror_follows_the_steps_of_this_process_and_its_lanes(tmp_path):
    """Steps side by side (``training.jobs.lanes``) run in child processes: the record names each, and the outer
    unit holds the sum of their shares."""
    import multiprocessing

    store = RunStore(tmp_path / "ws")
    lane = multiprocessing.get_context("spawn").Process(target=time.sleep, args=(60,))
    lane.start()
    try:
        kd = _running(store, lane.pid, "train", 2)
        ghost = _running(store, os.getpid(), "train", 3)
        store.update(kd.id, name="real-kd")
        store.update(ghost.id, name="real-ghost")
        _, inner = _mirrored(store, "training ghost, kd (2 at a time)")
    finally:
        lane.terminate()
        lane.join()
    assert inner["stage"] == "training ghost, kd (2 at a time) · kd epoch 2/4; ghost epoch 3/4"
    assert inner["batch"] == 375 + 625  # kd (1 + 5/10) of 4 epochs, ghost (2 + 5/10) of 4
    assert fraction(inner) == (1 + 1.0) / 6
    assert inner["images_per_s"] == 25.0


def test_every_record_shape_reads_as_one_line():
    run = {"stage": "train", "epoch": 3, "epochs": 12, "batch": 4, "batches": 19, "images_per_s": 80.0, "eta_s": 120}
    assert describe(run) == "train: epoch 3/12, batch 4/19, 80.0 img/s, ETA 2.0 min"
    cv = {"stage": "repeat 1/1 · fold 2/5 · ghost", "unit": "step", "epoch": 8, "epochs": 30, "batch": 0,
          "batches": 1000}  # no speed, no ETA: still one line, no KeyError
    assert describe(cv) == "repeat 1/1 · fold 2/5 · ghost: step 8/30"
    phantoms = {"stage": "building the demo phantoms", "unit": "patient", "epoch": 5, "epochs": 40}
    assert describe(phantoms) == "building the demo phantoms: patient 5/40" and 0 < fraction(phantoms) < 1
    assert fraction({"stage": "ready", "epoch": 6, "epochs": 6, "batch": 1, "batches": 1, "done": True}) == 1.0


def test_set_status_reads_the_build_record(workspace):
    from training.jobs import runner as jobs

    log = workspace / "models" / "demo-build.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("step 1/6: baseline\n")
    (workspace / "models" / "demo-job.json").write_text(json.dumps({"pid": os.getpid(), "log": str(log),
                                                                    "started": time.time()}))
    status = jobs.set_status("demo")
    assert status["running"] and status["progress"] is None and not status["finished_ok"]
    on = writer(set_progress_path("demo"))
    on({"stage": "training kd", "unit": "step", "epoch": 4, "epochs": 6, "batch": 500, "batches": 1000})
    status = jobs.set_status("demo")
    assert status["progress"]["stage"] == "training kd" and status["progress"]["updated"] > 0
    on({"stage": "ready", "unit": "step", "epoch": 6, "epochs": 6, "batch": 1, "batches": 1, "done": True})
    assert jobs.set_status("demo")["finished_ok"] and read_json(set_progress_path("demo"))["done"]
