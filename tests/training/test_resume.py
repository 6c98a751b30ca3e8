"""Kill -9 a real training process mid-epoch; --resume continues with no lost or duplicated epochs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.builders import wait_until
from training.jobs.registry import RunStore

REPO = Path(__file__).resolve().parents[2]


def test_kill_mid_epoch_then_resume(workspace):
    """Killed as soon as one epoch is finished, whenever that is on this host: a kill lands wherever the
    process is (mid-epoch, in a checkpoint write), and the resume must pick up after the last whole epoch."""
    env = {**os.environ, "CTSS_WORKSPACE": str(workspace), "PYTHONPATH": str(REPO)}
    epochs = 3  # killed after the first: two left to resume, the last one the end of the run
    args = [sys.executable, "-m", "training", "train", "--model", "kd", "--size", "48", "--epochs", str(epochs),
            "--batch-size", "2", "--no-augment", "--threads", "1", "--split", "0.5,0.17,0.33", "--name", "killme"]
    proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        store = RunStore(workspace)
        run = wait_until(lambda: next(iter(store.list()), None), 120, "the run to start", interval=0.2)
        wait_until(lambda: len(run.metrics()) >= 1, 180, "the first finished epoch", interval=0.2)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    finished = [m["epoch"] for m in run.metrics()]
    assert finished == list(range(1, len(finished) + 1)) and len(finished) < epochs, finished
    res = subprocess.run([sys.executable, "-m", "training", "train", "--resume", run.id], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    done = RunStore(workspace).get(run.id)
    assert done.status == "completed"
    assert [m["epoch"] for m in done.metrics()] == list(range(1, epochs + 1))  # nothing lost, nothing duplicated
    assert f"resumed train at epoch {len(finished) + 1}/{epochs}" in done.log_path.read_text()
