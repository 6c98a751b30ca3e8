"""Independent training steps side by side, each in its own process with its share of the cores.

On a 2-core CPU a training step runs only 1.55-1.77x faster on two threads than on one (the 64-px convolutions are too
small to keep two threads busy, and batch preparation is single-threaded Python), and two one-thread steps at once
barely slow each other, so two steps side by side finish about 1.15-1.2x sooner than one after the other
(docs/performance.md, "Training steps side by side"). A model set's students all start from the baseline and are
independent once it is trained; so are a cross-validation fold's.

``CTSS_LANES`` sets the number of lanes (1: one step at a time, in this process). By default: two on a CPU host with
at least two cores, one on a GPU host (the steps would share the one device).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any, Callable, Iterable, TypeVar

T = TypeVar("T")


def total_threads() -> int:
    """The cores training may use: ``CTSS_THREADS`` if set, else every core."""
    return int(os.environ.get("CTSS_THREADS", 0) or 0) or os.cpu_count() or 1


def lane_count() -> int:
    """How many steps run at once (module doc)."""
    if env := os.environ.get("CTSS_LANES"):
        return max(1, int(env))
    import torch

    if torch.cuda.is_available():
        return 1
    return 2 if total_threads() >= 2 else 1


def _start_lane(threads: int) -> None:
    """Every lane process: its share of the cores (read by ``training.engine.loop.set_threads`` when a run does not
    name its own), and log lines on the console as the parent prints them."""
    os.environ["CTSS_THREADS"] = str(threads)
    os.environ["CTSS_LANES"] = "1"  # a lane never opens lanes of its own
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")


def run_in_lanes(jobs: Iterable[tuple[Callable[..., T], tuple[Any, ...]]], lanes: int,
                 on_done: Callable[[int, T], None] | None = None) -> list[T]:
    """Run ``fn(*args)`` for each job, ``lanes`` at a time, in fresh processes (spawned: a forked copy of a process
    whose thread pools have started can hang); results in job order. ``fn`` must be importable (module level).

    ``on_done(index, result)`` runs here as each job finishes, so finished work is kept (published, written) while the
    others go on. If a job fails, the jobs not yet started are dropped, those running are waited for (and kept), then
    the first error is raised.
    """
    jobs = list(jobs)
    results: dict[int, T] = {}
    threads = max(1, total_threads() // max(1, lanes))
    ctx = multiprocessing.get_context("spawn")
    error: BaseException | None = None
    with ProcessPoolExecutor(max_workers=lanes, mp_context=ctx, initializer=_start_lane,
                             initargs=(threads,)) as pool:
        pending: dict[Future, int] = {pool.submit(fn, *args): i for i, (fn, args) in enumerate(jobs)}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                i = pending.pop(fut)
                if fut.cancelled():
                    continue
                if (exc := fut.exception()) is not None:
                    if error is None:
                        error = exc
                        for other in pending:
                            other.cancel()  # not started yet: dropped; running ones finish and are kept
                    continue
                results[i] = fut.result()
                if on_done is not None:
                    on_done(i, results[i])
    if error is not None:
        raise error
    return [results[i] for i in range(len(jobs))]


def lane_pids() -> set[int]:
    """This process and its lanes: the processes whose runs a job's progress mirrors."""
    return {os.getpid(), *(p.pid for p in multiprocessing.active_children() if p.pid is not None)}

