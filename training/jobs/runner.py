"""Job runner: training happens in separate processes, never inside Streamlit.

- ``enqueue(cfg)`` records a *queued* run and makes sure a supervisor process is alive.
- The supervisor (``python -m training.jobs.runner``, detached in its own session) starts queued runs one
  at a time (``CTSS_MAX_JOBS`` to allow more), each as ``python -m training <cmd> --run-id ID`` — or
  under ``torchrun --nproc_per_node N`` — in its own process group, and exits when the queue is
  empty. It survives app restarts; the app only reads the registry and the run folders. One
  supervisor at a time (an exclusive lock on ``supervisor.lock``); one that is about to exit first
  drops ``supervisor.pid`` and looks at the queue once more, so a run queued meanwhile is never
  stranded: either that supervisor sees it, or ``ensure_supervisor`` starts a new one (which waits
  for the lock).
- ``cancel`` stops a run's whole process group (SIGTERM, then SIGKILL); ``resume`` re-queues a
  failed or cancelled run, which continues from its last saved epoch.
- ``reconcile`` marks runs whose process died without reporting (kill -9, OOM, a deleted dataset
  that crashed the loader) as failed, with the tail of their log.
- ``launch_demo`` / ``launch_real`` build the demo or real-CT model set in the background (the Compare page).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from ctmodels.atomic import read_json
from ctmodels.workspace import REPO_ROOT, models_dir, workspace_dir

from ..config import RunConfig
from .progress import set_progress_path
from .registry import Run, RunStore

log = logging.getLogger(__name__)
SUPERVISOR_PID = "supervisor.pid"
SUPERVISOR_LOCK = "supervisor.lock"
POLL_S = 1.0


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours counts as dead
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except OSError:
        return True


def log_tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["CTSS_WORKSPACE"] = str(workspace_dir())
    env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _command(run: Run) -> list[str]:
    if run.nprocs > 1:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={run.nprocs}",
                "-m", "training", run.command, "--run-id", run.id]
    return [sys.executable, "-m", "training", run.command, "--run-id", run.id]


# ------------------------------------------------------------------ app side
def enqueue(cfg: RunConfig, nprocs: int = 1, store: RunStore | None = None, start: bool = True) -> Run:
    """Record a queued run (config validated first) and wake the supervisor."""
    cfg.validate()
    store = store or RunStore()
    run = store.create(cfg, status="queued", nprocs=max(1, int(nprocs)))
    if start:
        ensure_supervisor(store)
    return run


def ensure_supervisor(store: RunStore | None = None) -> int:
    """Start the supervisor unless one is alive; returns its pid."""
    store = store or RunStore()
    pid_file = store.root / SUPERVISOR_PID
    try:
        pid = int(pid_file.read_text())
        if _alive(pid):
            return pid
    except (OSError, ValueError):
        pass
    log_path = store.root / "supervisor.log"
    with open(log_path, "a") as out:
        proc = subprocess.Popen([sys.executable, "-m", "training.jobs.runner"], cwd=REPO_ROOT, env=_env(),
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    pid_file.write_text(str(proc.pid))
    return proc.pid


def cancel(run_id: str, store: RunStore | None = None, grace_s: float = 15.0) -> Run:
    """Stop a queued or running run; a running one gets SIGTERM (clean stop), SIGKILL after ``grace_s``."""
    store = store or RunStore()
    run = store.get(run_id)
    if run.status == "queued":
        store.update(run_id, status="cancelled", finished=time.time(), error="cancelled before it started")
        return store.get(run_id)
    if run.status != "running":
        return run
    if run.pid and _alive(run.pid):
        try:
            os.killpg(run.pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass
        t0 = time.time()
        while _alive(run.pid) and time.time() - t0 < grace_s:
            time.sleep(0.2)
        if _alive(run.pid):
            try:
                os.killpg(run.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    run = store.get(run_id)
    if run.status == "running":
        store.update(run_id, status="cancelled", finished=time.time(), pid=None, error="cancelled by the user")
    return store.get(run_id)


def resume(run_id: str, store: RunStore | None = None) -> Run:
    """Queue a failed or cancelled run again; it continues from its last saved epoch."""
    store = store or RunStore()
    run = store.get(run_id)
    if run.status not in ("failed", "cancelled"):
        raise ValueError(f"only failed or cancelled runs can be resumed (this one is {run.status})")
    store.update(run_id, status="queued", error=None, finished=None)
    ensure_supervisor(store)
    return store.get(run_id)


def reconcile(store: RunStore | None = None) -> list[str]:
    """Mark runs whose process is gone while the registry says running as failed; returns their ids."""
    store = store or RunStore()
    fixed = []
    for run in store.list(status="running"):
        if not _alive(run.pid) and time.time() - run.created > 5:
            tail = log_tail(run.log_path)
            store.update(run.id, status="failed", finished=time.time(), pid=None,
                         error="the training process ended without reporting (killed or crashed).\n" + tail)
            fixed.append(run.id)
    return fixed


# ------------------------------------------------------------------ supervisor side
def supervise(store: RunStore | None = None) -> None:
    store = store or RunStore()
    pid_file = store.root / SUPERVISOR_PID
    with open(store.root / SUPERVISOR_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # wait for a previous supervisor to finish exiting
        pid_file.write_text(str(os.getpid()))
        _supervise_locked(store, pid_file)


def _drop_pid_file(pid_file: Path) -> None:
    try:
        if int(pid_file.read_text()) == os.getpid():
            pid_file.unlink()
    except (OSError, ValueError):
        pass


def charge_exit(store: RunStore, run_id: str, proc: subprocess.Popen) -> bool:
    """Mark the run failed when the process that ended was its current attempt and it never reported.

    A process is charged only to the attempt that started it: the registry holds that attempt's pid
    while it runs. A run cancelled and resumed before its old process was reaped is queued (or running
    under a new pid) by then, and the old exit must not fail it. Returns whether the run was failed.
    """
    run = store.get(run_id)
    if run.status != "running" or run.pid != proc.pid:
        return False
    store.update(run_id, status="failed", finished=time.time(), pid=None,
                 error=f"the training process exited with code {proc.returncode} without reporting.\n"
                 + log_tail(run.log_path))
    return True


def _supervise_locked(store: RunStore, pid_file: Path) -> None:
    max_jobs = int(os.environ.get("CTSS_MAX_JOBS", "1"))
    children: dict[str, subprocess.Popen] = {}
    idle_since = time.time()
    while True:
        for rid, proc in list(children.items()):
            if proc.poll() is not None:
                children.pop(rid)
                charge_exit(store, rid, proc)
        reconcile(store)
        queued = sorted(store.list(status="queued"), key=lambda r: r.created)
        while queued and len(children) < max_jobs:
            run = queued.pop(0)
            with open(run.log_path, "a") as out:
                proc = subprocess.Popen(_command(run), cwd=REPO_ROOT, env=_env(), stdout=out,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
            store.update(run.id, status="running", pid=proc.pid, started=time.time())
            children[run.id] = proc
            log.info("started run %s (pid %d)", run.id, proc.pid)
        if children or queued:
            idle_since = time.time()
        elif time.time() - idle_since > 3.0:
            _drop_pid_file(pid_file)  # from now on, ensure_supervisor starts a successor...
            if not store.list(status="queued"):  # ...so a run queued before this line is seen here
                return
            pid_file.write_text(str(os.getpid()))
            continue
        time.sleep(POLL_S)


# ------------------------------------------------------------------ model sets (demo, real CT)


def _job_file(name: str) -> Path:
    return models_dir() / f"{name}-job.json"


def launch_set(name: str) -> dict:
    """Start ``python -m training <name>`` ('demo' or 'real') detached unless it runs; returns its job record."""
    current = set_status(name)
    if current and current.get("running"):
        return current
    folder = models_dir()
    folder.mkdir(parents=True, exist_ok=True)
    log_path = folder / f"{name}-build.log"
    set_progress_path(name).unlink(missing_ok=True)  # the new build's record only
    with open(log_path, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "training", name], cwd=REPO_ROOT, env=_env(), stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    job = {"pid": proc.pid, "log": str(log_path), "started": time.time()}
    _job_file(name).write_text(json.dumps(job))
    return {**job, "running": True}


def set_status(name: str) -> dict | None:
    """A background set build: running?, its progress record (``training.jobs.progress``), and the log tail."""
    try:
        job = json.loads(_job_file(name).read_text())
    except (OSError, ValueError):
        return None
    progress = read_json(set_progress_path(name))
    job.update({"running": _alive(job["pid"]), "progress": progress, "tail": log_tail(Path(job["log"]), 12),
                "finished_ok": bool(progress and progress.get("done"))})
    return job


def launch_demo() -> dict:
    """Build the demo model set in the background (the Compare page's offer when no model exists)."""
    return launch_set("demo")


def demo_status() -> dict | None:
    return set_status("demo")


def launch_real() -> dict:
    """Build the real-CT model set in the background (the Compare page's offer when real data is present)."""
    return launch_set("real")


def real_status() -> dict | None:
    return set_status("real")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    supervise()
