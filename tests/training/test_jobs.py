"""The job supervisor never strands a queued run, even one queued while the supervisor is exiting."""

from __future__ import annotations

import sys

import training.jobs as jobs
from training.runs import RunStore


def test_run_queued_while_the_supervisor_exits_is_still_started(workspace, tiny, monkeypatch):
    store = RunStore(workspace)
    queued = []
    real_drop = jobs._drop_pid_file

    def enqueue_during_exit(pid_file):
        real_drop(pid_file)
        if not queued:  # the app queues a run right after the supervisor decided it was idle
            queued.append(jobs.enqueue(tiny(model="kd"), store=store, start=False))

    monkeypatch.setattr(jobs, "_drop_pid_file", enqueue_during_exit)
    monkeypatch.setattr(jobs, "_command", lambda run: [sys.executable, "-c", "pass"])
    monkeypatch.setattr(jobs, "POLL_S", 0.05)
    jobs.supervise(store)
    run = store.get(queued[0].id)
    # it was launched (the stand-in command exits without reporting, so the supervisor marks it failed)
    assert run.status == "failed" and "without reporting" in run.error
    assert not (store.root / jobs.SUPERVISOR_PID).exists()
