"""Choose the runtime a model is served with (``ctmodels.serving``): export its served graph to ONNX fp32 and
int8 (static QDQ, calibrated on training slices), score the model's validation slices with each and with
eager PyTorch, and serve the fastest runtime whose verdicts agree with eager's on at least 99.5 % of them
(eager when none does or none is faster). The numbers go into ``served/served.json`` beside the checkpoint,
which the app reads; ``python -m training serve`` runs it for a model set, and each set build runs it."""

from __future__ import annotations

import logging
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import DataLoader

from ctmodels.atomic import write_json_atomic
from ctmodels.checkpoint import checkpoints_in
from ctmodels.export import quantize_int8
from ctmodels.inference import LoadedModel, load_model
from ctmodels.preprocess import network_outputs
from ctmodels.serving import (
    MIN_AGREEMENT,
    ONNX_FILES,
    SERVED_CARD,
    ServedScorer,
    export_served,
    read_choice,
    served_dir,
    served_session,
)

from ..config import RunConfig
from ..data.prepare import Prepared, SliceDataset, prepare
from .evaluate import learned_involvement

log = logging.getLogger(__name__)

#: Validation slices scored per runtime at most (the agreement's denominator), and calibration slices for int8.
MAX_SLICES = 512
CALIBRATION_SLICES = 64
BATCH = 64
TIMED = 32  # slices per timed call (the choice needs a ratio, not a benchmark)

Scorer = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]]


def _inputs(data: Prepared, indices: np.ndarray, lm: LoadedModel) -> torch.Tensor:
    loader = DataLoader(SliceDataset(data, indices, lm.pre, None), batch_size=256, shuffle=False)
    return torch.cat([x for x, *_ in loader])


def _run(scorer: Scorer, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray | None]:
    with torch.no_grad():
        parts = [scorer(x[k : k + BATCH]) for k in range(0, len(x), BATCH)]
    logits = torch.cat([lg for lg, _ in parts]).float().numpy()
    return logits, (None if parts[0][1] is None else torch.cat([les for _, les in parts]).float().numpy())


def _p_severe(lm: LoadedModel, data: Prepared, indices: np.ndarray, x: torch.Tensor, scorer: Scorer) -> np.ndarray:
    """P(severe) by the card's rule for every input."""
    logits, lesion = _run(scorer, x)
    return lm.rule.p_severe(logits, learned_involvement(data, indices, lesion))


def median_seconds(call: Callable[[], object], repeats: int = 3) -> float:
    """The median wall time of ``repeats`` calls after one untimed warm-up call."""
    call()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _slices_per_s(scorer: Scorer, x: torch.Tensor) -> float:
    """Throughput on one batch of slices (the choice needs a ratio, not a benchmark)."""
    batch = x[:TIMED]
    return round(len(batch) / median_seconds(lambda: _run(scorer, batch)), 1)


def _needs_serving(folder: Path, lm: LoadedModel) -> bool:
    choice = read_choice(folder)
    return not choice or choice.get("checkpoint_id") != lm.ckpt_id


def serve(folder: str | Path, data: Prepared | None = None, force: bool = False) -> dict[str, Any]:
    """Measure and record the served runtime of the checkpoint in ``folder`` (module docstring)."""
    folder = Path(folder)
    lm = load_model(folder, served=False)
    if not force and not _needs_serving(folder, lm):
        return read_choice(folder) or {}
    if data is None:
        cfg = RunConfig.from_dict(lm.card.training)
        data = prepare(cfg.data, lm.pre, cfg.seed)
    val = data.subset(1) if len(data.subset(1)) else data.subset(0)
    val = val[np.linspace(0, len(val) - 1, min(len(val), MAX_SLICES)).astype(int)] if len(val) > MAX_SLICES else val
    train = data.subset(0)
    calib = train[np.linspace(0, len(train) - 1, min(len(train), CALIBRATION_SLICES)).astype(int)]
    x = _inputs(data, val, lm)
    eager = lambda b: network_outputs(lm.model, b, lm.pre)  # noqa: E731
    eager_p = _p_severe(lm, data, val, x, eager)
    out = served_dir(folder)
    fp32 = export_served(lm.model, lm.pre, out / ONNX_FILES["ort_fp32"])
    quantize_int8(fp32, out / ONNX_FILES["ort_int8"], _inputs(data, calib, lm).numpy())
    cut = lm.rule.cut
    candidates: dict[str, dict[str, Any]] = {}
    for runtime, name in ONNX_FILES.items():
        scorer = ServedScorer(runtime, out / name, lm.has_lesion_map, served_session(out / name, threads=None))
        p = _p_severe(lm, data, val, x, scorer)
        candidates[runtime] = {
            "verdict_agreement": round(float(np.mean((p >= cut) == (eager_p >= cut))), 4),
            "max_abs_p_difference": round(float(np.max(np.abs(p - eager_p))), 5),
            "slices_per_s": _slices_per_s(scorer, x),
        }
    eligible = [r for r, c in candidates.items() if c["verdict_agreement"] >= MIN_AGREEMENT]
    eager_rate = _slices_per_s(eager, x)
    best = max(eligible, key=lambda r: candidates[r]["slices_per_s"], default="eager")
    if best != "eager" and candidates[best]["slices_per_s"] <= eager_rate:
        best = "eager"
    choice = {
        "checkpoint_id": lm.ckpt_id, "runtime": best, "min_agreement": MIN_AGREEMENT,
        "validation_slices": int(len(val)), "eager_slices_per_s": eager_rate, "candidates": candidates,
        "measured": time.strftime("%Y-%m-%d %H:%M:%S"), "threads": torch.get_num_threads(),
        "rule": "the fastest runtime whose verdicts at the card's cut agree with eager PyTorch on at least "
                f"{MIN_AGREEMENT:.1%} of the validation slices; eager when none does or none is faster",
    }
    write_json_atomic(out / SERVED_CARD, choice)
    log.info("%s served with %s (%s)", folder.name, best, candidates)
    return choice


def serve_set(folder: str | Path, force: bool = False) -> dict[str, dict[str, Any]]:
    """``serve`` every checkpoint of a model-set folder (prepared data shared between models that match)."""
    return {p.name: serve(p, force=force) for p in checkpoints_in(Path(folder))}
