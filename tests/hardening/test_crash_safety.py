"""kill -9 during checkpoint writes leaves a loadable checkpoint; a full disk fails a run cleanly."""

from __future__ import annotations

import errno
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ctmodels.checkpoint import load

REPO = Path(__file__).resolve().parents[2]

WRITER = textwrap.dedent("""
    import sys, torch
    sys.path.insert(0, {repo!r})
    from ctmodels.checkpoint import ModelCard, save
    from ctmodels.nets import create
    model = create("kd")
    i = 0
    while True:
        i += 1
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(float(i))
        save(model, ModelCard(model_key="kd", input_size=32, notes=str(i)), {folder!r})
        print(i, flush=True)
""")


@pytest.mark.slow  # a process-level test (issue 'One assessment path': fast or slow); `make test-all` runs it
def test_kill_during_checkpoint_writes(tmp_path):
    folder = tmp_path / "ckpt"
    rng = random.Random(0)
    for attempt in range(3):
        proc = subprocess.Popen([sys.executable, "-c", WRITER.format(repo=str(REPO), folder=str(folder))],
                                stdout=subprocess.PIPE, text=True)
        try:
            first = proc.stdout.readline()  # at least one complete save happened in this process
            assert first.strip()
            time.sleep(rng.uniform(0.0, 0.4))  # then kill at an arbitrary point of a later save
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        finally:
            if proc.poll() is None:
                proc.kill()
        model, card = load(folder)  # recovers an interrupted swap if needed
        values = {float(p.flatten()[0]) for p in model.parameters()}
        assert len(values) == 1 and str(int(values.pop())) == card.notes  # one whole checkpoint, never a mix
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".ckpt.")]
    assert leftovers == []  # temp folders of killed writers are cleared by the next load


def test_full_disk_fails_the_run_cleanly(workspace, tiny, monkeypatch):
    import ctmodels.checkpoint as ckpt
    from training.engine.pipeline import execute
    from training.jobs.registry import RunStore

    real = ckpt._write_file
    calls = {"n": 0}

    def full_after_a_while(path, data):
        calls["n"] += 1
        if calls["n"] > 4:  # epoch 1 saved (best + state), then the disk fills up
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, data)

    monkeypatch.setattr(ckpt, "_write_file", full_after_a_while)
    with pytest.raises(OSError, match="No space left"):
        execute(tiny(model="kd", optim={"epochs": 3}))
    run = RunStore(workspace).list()[0]
    assert run.status == "failed" and "No space left on device" in run.error
    assert run.pid is None and run.finished is not None
    model, card = load(run.best_dir)  # the last good checkpoint is intact
    assert card.model_key == "kd"
    assert not [p for p in run.dir.rglob(".*tmp*")]  # no half-written temp folders left
    monkeypatch.setattr(ckpt, "_write_file", real)
    from training.engine.pipeline import execute as again

    done = again(__import__("training.config", fromlist=["RunConfig"]).RunConfig.from_dict(run.config),
                 store=RunStore(workspace), run=RunStore(workspace).get(run.id), resume=True)
    assert done.status == "completed"
    assert [m["epoch"] for m in done.metrics()] == [1, 2, 3]
