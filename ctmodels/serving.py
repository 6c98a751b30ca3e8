"""Whole-scan scoring on the runtime a model is served with: ONNX Runtime fp32 or int8, chosen per model
only where it agrees with eager PyTorch on that model's validation slices (``training serve`` measures it
and writes ``served/served.json`` beside the checkpoint), eager otherwise.

The served graph is the whole scoring step of ``preprocess.network_outputs``: the card's flips as one
batch, each flip's lesion map turned back, the mean of the views; so one ORT call scores a batch of slices
as the app scores them. Grad-CAM needs gradients and stays eager. A ``served.json`` made for other weights
(its checkpoint id differs) is ignored.
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from .atomic import atomic_file
from .export import ExportError, session
from .preprocess import FLIPS, Preprocessing

log = logging.getLogger(__name__)

SERVED_DIR = "served"
SERVED_CARD = "served.json"
#: A runtime is served only if its verdicts agree with eager's on at least this share of validation slices.
MIN_AGREEMENT = 0.995
ONNX_FILES = {"ort_fp32": "model.fp32.onnx", "ort_int8": "model.int8.onnx"}
#: Intra-op threads of a served session: one, because ``ctmodels.inference.score_side_by_side`` runs a share of
#: every model of a scan on every core (measured on 2 cores: int8 baseline 0.57 s per 64 slices on one thread,
#: 0.35 s on two; one-thread runs side by side beat two-thread ones in turn).
SERVED_THREADS = 1


#: Weights outside the arena, so that shrinking it hands back every activation buffer (ORT keeps the arena's
#: first chunk otherwise, and the weights sit in it).
_SERVED_CONFIG = {"session.use_device_allocator_for_initializers": "1"}
#: Run options that shrink the session's arena once the run is done: what a scan's last batch is run with.
_RELEASE = ort.RunOptions()
_RELEASE.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")


def served_session(path: str | Path, threads: int | None = SERVED_THREADS) -> ort.InferenceSession:
    """An ORT session as the server holds one: with ORT's CPU memory arena, the weights outside it, and the arena
    shrunk after the last batch of each scan (``ServedScorer``). The server keeps one session per model for good:
    an arena never shrunk kept each model's largest batch's activations (on P002 with the four real-CT models at
    64-slice batches the process grew 1.34 -> 2.80 GB over three scans). Without any arena every batch's buffers
    were fresh allocations, which under the server's allocator (``work_slots.tune_allocator``: blocks over 2 MB
    get their own mapping) are mapped, faulted in and unmapped batch by batch: the four models scored P002 in
    3.8 s of one core instead of 2.9 (``docs/performance.md``). Shrunk after each scan: 2.9 s, and 45 MB more
    resident than without an arena."""
    return session(path, threads=threads, config=_SERVED_CONFIG)


class ServedGraph(nn.Module):
    """(class logits (N, 2), lesion probability (N, S, S)) of a batch, scored as the card says; the lesion
    output is all zeros for a net without a lesion head (``has_lesion`` tells)."""

    def __init__(self, model: nn.Module, flip_average: bool) -> None:
        super().__init__()
        self.model = model
        self.views = FLIPS if flip_average else FLIPS[:1]
        self.has_lesion = getattr(model, "lesion_head", None) is not None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        n = x.shape[0]
        batch = torch.cat([x.flip(dims) if dims else x for dims in self.views])
        if not self.has_lesion:
            logits = self.model(batch)
            return logits.reshape(len(self.views), n, -1).mean(0), torch.zeros_like(x[:, 0])
        logits, lesion = self.model.forward_both(batch)
        maps = torch.sigmoid(lesion)[:, 0].reshape(len(self.views), n, x.shape[-2], x.shape[-1])
        back = [maps[k].flip(dims) if dims else maps[k] for k, dims in enumerate(self.views)]
        return logits.reshape(len(self.views), n, -1).mean(0), torch.stack(back).mean(0)


def export_served(model: nn.Module, pre: Preprocessing, path: str | Path, opset: int = 17) -> Path:
    """Write the served graph of ``model`` (CPU, fp32, dynamic batch) to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    graph = ServedGraph(model.eval().cpu().float(), pre.flip_average).eval()
    dummy = torch.zeros(2, 1, pre.size, pre.size)
    try:
        with atomic_file(path) as tmp, torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice (see ctmodels.export)
            torch.onnx.export(graph, (dummy,), str(tmp), input_names=["input"], output_names=["logits", "lesion"],
                              opset_version=opset, dynamo=False, do_constant_folding=True,
                              dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}, "lesion": {0: "batch"}})
    except Exception as exc:
        raise ExportError(f"ONNX export of the served graph failed: {exc}") from exc
    return path


@dataclass
class ServedScorer:
    """An ONNX Runtime session scoring normalised batches (N, 1, S, S) like ``network_outputs``."""

    runtime: str
    path: Path
    has_lesion: bool
    sess: ort.InferenceSession

    def __call__(self, x: torch.Tensor | np.ndarray, release: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Score a batch; ``release``: shrink the session's arena afterwards (the last batch of a scan: the batches
        before it reuse its buffers)."""
        arr = x.detach().cpu().numpy() if torch.is_tensor(x) else np.asarray(x)
        logits, lesion = self.sess.run(["logits", "lesion"], {"input": np.ascontiguousarray(arr, np.float32)},
                                       _RELEASE if release else None)
        return torch.from_numpy(logits), (torch.from_numpy(lesion) if self.has_lesion else None)


def served_dir(folder: str | Path) -> Path:
    return Path(folder) / SERVED_DIR


def read_choice(folder: str | Path) -> dict[str, Any] | None:
    """The model's ``served.json`` (which runtime, its agreement with eager, its speed), or None."""
    path = served_dir(folder) / SERVED_CARD
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def open_served(folder: str | Path, ckpt_id: str, has_lesion: bool) -> ServedScorer | None:
    """The scorer ``served.json`` chose for these weights; None for eager (no file, another checkpoint's file,
    eager chosen, or a file that will not open: logged, and the model is served eagerly)."""
    choice = read_choice(folder)
    if not choice or choice.get("checkpoint_id") != ckpt_id or choice.get("runtime") not in ONNX_FILES:
        return None
    path = served_dir(folder) / ONNX_FILES[choice["runtime"]]
    try:
        return ServedScorer(choice["runtime"], path, has_lesion, served_session(path))
    except Exception as exc:  # noqa: BLE001 - a damaged file must not stop the app; eager still scores
        log.warning("served runtime %s of %s not opened (%s); scoring with eager PyTorch", choice["runtime"],
                    folder, exc)
        return None
