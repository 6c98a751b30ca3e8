"""Kill -9 a real training process mid-epoch; --resume continues with no lost or duplicated epochs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from training.runs import RunStore

REPO = Path(__file__).resolve().parents[2]


def _wait(pred, timeout: float, what: str):
    t0 = time.time()
    while time.time() - t0 < timeout:
        got = pred()
        if got:
            return got
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_kill_mid_epoch_then_resume(workspace):
    env = {**os.environ, "CTSS_WORKSPACE": str(workspace), "PYTHONPATH": str(REPO)}
    args = [sys.executable, "-m", "training", "train", "--model", "kd", "--size", "48", "--epochs", "4",
            "--batch-size", "4", "--no-augment", "--threads", "1", "--split", "0.5,0.17,0.33", "--name", "killme"]
    proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        store = RunStore(workspace)
        run = _wait(lambda: next(iter(store.list()), None), 120, "the run to start")

        def in_second_epoch():
            p = run.progress()
            return p and p["epoch"] == 2 and 0 < p["batch"] < p["batches"] and len(run.metrics()) == 1

        _wait(in_second_epoch, 180, "the middle of epoch 2")
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert [m["epoch"] for m in run.metrics()] == [1]
    res = subprocess.run([sys.executable, "-m", "training", "train", "--resume", run.id], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    done = RunStore(workspace).get(run.id)
    assert done.status == "completed"
    epochs = [m["epoch"] for m in done.metrics()]
    assert epochs == [1, 2, 3, 4]  # nothing lost, nothing duplicated
    assert "resumed train at epoch 2/4" in done.log_path.read_text()
