"""The one progress channel of background jobs.

Every job (a training run, a cross-validation, a model-set build) writes the same record to a
``progress.json``-style file, and the app reads every one the same way (``ui.progress``):

- ``stage``: where it is, in words;
- ``epoch`` of ``epochs`` in units of ``unit`` ("epoch" unless said: a model-set build counts steps,
  the demo data build patients), and within it ``batch`` of ``batches``;
- when known: ``images_per_s``, ``eta_s``, ``elapsed_s``; ``done`` once the job has finished well.

A job made of training runs (cross-validation, model sets) mirrors the running step's record into its
own, so one bar shows both where the job is and how far the current step has come.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable

from ctmodels.atomic import write_json_atomic
from ctmodels.workspace import models_dir

from .lanes import lane_pids
from .registry import Run, RunStore

log = logging.getLogger(__name__)
OnProgress = Callable[[dict[str, Any]], None]


def set_progress_path(name: str) -> Path:
    """Where the build of model set ``name`` ('demo', 'real') reports, for the app to read."""
    return models_dir() / f"{name}-progress.json"


def writer(path: Path) -> OnProgress:
    """An ``OnProgress`` that stamps each record and writes it atomically to ``path``."""
    return lambda record: write_json_atomic(path, {**record, "updated": time.time()})


class Mirror:
    """Copies the epoch/batch progress of the run this process is executing into an outer job's record."""

    def __init__(self, progress: OnProgress | None, every_s: float = 2.0) -> None:
        self.progress, self.store, self.head = progress, None, {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, args=(every_s,), daemon=True) if progress else None
        if self._thread:
            self._thread.start()

    def point(self, store: RunStore, head: dict[str, Any]) -> None:
        """The outer position (``stage``, ``epoch`` of ``epochs``...); runs of this process in ``store`` fill in."""
        self.store, self.head = store, head
        self._emit([])

    def _emit(self, inner: list[tuple[str, dict[str, Any]]]) -> None:
        """``inner``: (step name, its run's record) of each running step (several when steps run side by side: the
        outer unit then holds the sum of their shares, as many steps as are running at once)."""
        if not (self.progress and self.head):
            return
        fracs = [((p["epoch"] - 1) + p["batch"] / max(p["batches"], 1)) / max(p["epochs"], 1) for _, p in inner]
        stage = self.head["stage"]
        if len(inner) == 1:
            stage += f" · {inner[0][1]['stage']} epoch {inner[0][1]['epoch']}/{inner[0][1]['epochs']}"
        elif inner:
            stage += " · " + "; ".join(f"{name} epoch {p['epoch']}/{p['epochs']}" for name, p in inner)
        speed = [p["images_per_s"] for _, p in inner if "images_per_s" in p]
        self.progress({**self.head, "stage": stage, "batch": int(round(1000 * sum(fracs))),
                       "batches": 1000, **({"images_per_s": round(sum(speed), 2)} if speed else {})})

    def _loop(self, every_s: float) -> None:
        while not self._stop.wait(every_s):
            try:
                pids = lane_pids()  # this process and its lanes (training.jobs.lanes)
                mine = [r for r in self.store.list(status="running") if r.pid in pids] if self.store else []
                inner = [(_step_name(r), p) for r in sorted(mine, key=lambda r: r.created) if (p := r.progress())]
                if inner:
                    self._emit(inner)
            except Exception:  # progress is best effort; the run itself reports errors
                log.debug("progress mirror", exc_info=True)

    def close(self) -> None:
        self._stop.set()


def _step_name(run: Run) -> str:
    """A model set's or a cross-validation's step from its run's name (``real-kd``, ``cv-r0f1-kd``: ``kd``)."""
    return (run.name or run.model_key).rsplit("-", 1)[-1]
