"""Inference from a checkpoint card: the card's preprocessing, calibrated probabilities, and a
patient-level verdict for volumes.

Slice P(severe) follows the card's verdict rule (``ctmodels.verdict``: the classification head, or the
learned lesion area over the lung field for models with a lesion head). Patient-level verdict: the
lung-area-weighted mean of P(severe) over the slices the model scores (lung section ≥ its card's
``min_lung_share`` of the largest: 5 % by default, 30 % for the real-CT set, which learned from mid-chest
slices only), severe at the card's cut; the same aggregation ``training.evaluation.evaluate`` reports, so the app's
verdict is the one the model was evaluated with. Models with a lesion head also give the learned lesion
map (``lesion_map``) and the learned involvement per slice and per scan.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .checkpoint import ModelCard, checkpoint_id, load
from .imaging import Volume
from .nets.lesion import has_lesion_head
from .preprocess import (
    Preprocessing,
    drawn_map,
    lesion_areas,
    lung_slices,
    network_logits,
    network_outputs,
    normalize,
    pixel_areas,
    prepare_slice,
    to_network,
    to_slice,
)
from .serving import ServedScorer, open_served
from .verdict import VerdictRule


@dataclass
class LoadedModel:
    """A model ready for inference with everything its card says about inputs and outputs."""

    name: str
    folder: Path
    model: torch.nn.Module
    card: ModelCard
    pre: Preprocessing
    ckpt_id: str
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)  # CAM hooks are per model
    #: the ONNX Runtime scorer ``served.json`` chose for these weights (``ctmodels.serving``); None: eager
    served: ServedScorer | None = field(default=None, repr=False)

    @property
    def runtime(self) -> str:
        """What scores its slices: ``ort_fp32``, ``ort_int8`` or ``eager``."""
        return self.served.runtime if self.served is not None else "eager"

    @property
    def key(self) -> str:
        return self.card.model_key

    @property
    def severe_index(self) -> int:
        return list(self.card.class_names).index("severe")

    @property
    def rule(self) -> VerdictRule:
        return VerdictRule.from_card(self.card)

    @property
    def has_lesion_map(self) -> bool:
        return getattr(self.model, "lesion_head", None) is not None

    def scoring_lock(self) -> contextlib.AbstractContextManager:
        """What scoring holds: the model's lock when PyTorch scores (a Grad-CAM's hooks on the same modules would see
        the pass), nothing on a served runtime (an ONNX Runtime session runs concurrent calls), so one session's
        scoring never waits for another's Grad-CAM."""
        return self.lock if self.served is None else contextlib.nullcontext()


def load_model(folder: str | Path, name: str | None = None, served: bool = True) -> LoadedModel:
    """A checkpoint ready for inference; ``served``: score with the runtime its ``served.json`` chose."""
    folder = Path(folder)
    model, card = load(folder)
    # Inference only: frozen weights mean a CAM's backward pass computes activation gradients, not
    # weight gradients it would throw away (about half the work).
    model.eval().requires_grad_(False)
    ckpt = checkpoint_id(folder)
    scorer = open_served(folder, ckpt, has_lesion_head(model)) if served else None
    return LoadedModel(name or folder.name, folder, model, card, Preprocessing.from_card(card), ckpt, served=scorer)


@dataclass
class PreparedInput:
    """Network input for some slices of a volume, and where each came from (for CAM and lesion overlays)."""

    tensor: torch.Tensor  # (n, 1, S, S), normalised
    unit: np.ndarray  # (n, S, S) in [0, 1], what the network saw before normalisation
    boxes: list  # per slice: the tiles it was cut from (see preprocess.lung_tiles), or None
    slices: list[int]
    fields: np.ndarray | None = None  # (n, S, S): the lung field's share of each input pixel (lesion models)
    areas: np.ndarray | None = None  # (n, S, S): slice pixels per input pixel (lesion models)


def prepare_input(lm: LoadedModel, vol: Volume, slices: list[int], lung_mask: np.ndarray | None) -> PreparedInput:
    """The network input of ``slices`` as the card prepares them (slices in threads: their numpy work releases
    the GIL, and a whole scan's preparation took as long as scoring it)."""
    shape = vol.shape[1:]

    def one(i: int) -> tuple:
        field_i = None if lung_mask is None else lung_mask[i]
        img, box = prepare_slice(vol.slice(i), vol.is_hu, lm.pre, field_i)
        if not lm.has_lesion_map:
            return img, box, None, None
        field = to_network(field_i if field_i is not None else np.ones(shape, bool), box, lm.pre.size)
        return img, box, field, pixel_areas(box, lm.pre.size, shape)

    workers = min(len(slices), os.cpu_count() or 1, 4)
    if workers > 1:
        with ThreadPoolExecutor(workers) as pool:
            done = list(pool.map(one, slices))
    else:
        done = [one(i) for i in slices]
    units, boxes = [d[0] for d in done], [d[1] for d in done]
    fields, areas = [d[2] for d in done if d[2] is not None], [d[3] for d in done if d[3] is not None]
    unit = np.stack(units)
    t = normalize(torch.from_numpy(unit)[:, None], lm.pre)
    return PreparedInput(t, unit, boxes, list(slices), np.stack(fields) if fields else None,
                         np.stack(areas) if areas else None)


def calibrated(lm: LoadedModel, logits: torch.Tensor) -> np.ndarray:
    """P(severe) from the classification head's raw logits, temperature-scaled as the card says."""
    scaled = logits.detach().float() / float(lm.card.temperature or 1.0)
    return torch.softmax(scaled, dim=1)[:, lm.severe_index].numpy()


@dataclass
class SliceScores:
    """What a model says about some slices: P(severe) by its card's rule, and the learned lesion map."""

    p_severe: np.ndarray  # (n,)
    logits: np.ndarray  # (n, 2) class logits (flip-averaged as the card says)
    lesion: np.ndarray | None = None  # (n, S, S) the lesion map in the network's frame, as drawn (≥ 0.5: lesion)
    lesion_area: np.ndarray | None = None  # (n,) slice pixels
    lung_area: np.ndarray | None = None  # (n,) slice pixels (field plus lesion outside it)

    @property
    def involvement(self) -> np.ndarray | None:
        """Learned involvement per slice, % of the lung."""
        if self.lesion_area is None or self.lung_area is None:
            return None
        return 100.0 * self.lesion_area / np.maximum(self.lung_area, 1e-6)


def _ordered(lm: LoadedModel, logits: torch.Tensor) -> np.ndarray:
    """(n, 2) logits as (mild, severe), whatever order the card names the classes in."""
    z = logits.detach().float().numpy()
    return z[:, [1 - lm.severe_index, lm.severe_index]]


#: Slices per forward pass when a scan is scored (four views each with flips). On ONNX Runtime small batches:
#: on P002 with the int8 real-CT set 8 slices per call scored the baseline faster than 64 (1.1 vs 1.5 s) and
#: its transient memory was 45 MB instead of 200, which five sessions scoring at once feel. Eager PyTorch
#: wants large batches (its per-call overhead and thread start-up dominate small ones).
SERVED_BATCH = 8
EAGER_BATCH = 64


@torch.no_grad()
def score(lm: LoadedModel, inp: PreparedInput, batch: int | None = None) -> SliceScores:
    """Score prepared slices as the card says (``ctmodels.verdict``): one forward per batch (four with flips),
    on the model's served runtime (``ctmodels.serving``)."""
    return scores_of(lm, inp, *network_passes(lm, inp.tensor, batch))


@torch.no_grad()
def network_passes(lm: LoadedModel, x: torch.Tensor, batch: int | None = None
                   ) -> tuple[list[torch.Tensor], list[np.ndarray]]:
    """The raw outputs (class logits, lesion maps) of ``x`` in consecutive batches; a served session's arena is
    shrunk after the last one."""
    batch = batch or (SERVED_BATCH if lm.served is not None else EAGER_BATCH)
    logits, maps = [], []
    for k in range(0, len(x), batch):
        xb, last = x[k : k + batch], k + batch >= len(x)
        lg, les = lm.served(xb, release=last) if lm.served is not None else network_outputs(lm.model, xb, lm.pre)
        logits.append(lg)
        if les is not None:
            maps.append(les.numpy())
    return logits, maps


def scores_of(lm: LoadedModel, inp: PreparedInput, logits: list[torch.Tensor], maps: list[np.ndarray]) -> SliceScores:
    """What the raw outputs of all of ``inp``'s slices (in order) say by the card's rule."""
    head = _ordered(lm, torch.cat(logits)) if logits else np.zeros((0, 2), np.float32)
    if not maps:
        return SliceScores(lm.rule.p_severe(head), head)
    lesion = np.concatenate(maps)
    les, lung = lesion_areas(lesion, inp.fields, inp.areas)
    out = SliceScores(np.zeros(len(head)), head, drawn_map(lesion, lm.card.map_cut), les, lung)
    out.p_severe = lm.rule.p_severe(head, out.involvement)
    return out


def score_side_by_side(models: list[LoadedModel], inputs: list[PreparedInput], workers: int
                       ) -> Iterator[tuple[int, SliceScores, float]]:
    """(index in ``models``, its scores, seconds from its first pass to its last) of served models, as each
    finishes. Each model's slices are cut into ``workers`` runs of whole batches, and every core scores a run of
    every model in turn (ONNX Runtime sessions may run from several threads at once; each run shrinks the
    arena after its last batch). One model per core left the last model on one core while the other idled:
    on P002 the four int8 real-CT models took 5.5 s that way where their one-thread times sum to 7.9
    (``docs/performance.md``)."""
    if any(lm.served is None for lm in models):
        raise ValueError("score_side_by_side scores served models only: eager PyTorch uses every core already")
    parts: dict[int, list] = {}
    started: dict[int, float] = {}
    lock = threading.Lock()

    def run(k: int, part: int, x: torch.Tensor) -> tuple[int, bool]:
        with lock:
            started.setdefault(k, time.perf_counter())
        out = network_passes(models[k], x, SERVED_BATCH)
        with lock:
            parts[k][part] = out
            return k, all(p is not None for p in parts[k])

    with ThreadPoolExecutor(max(1, workers)) as pool:
        futures = []
        for k, inp in enumerate(inputs):
            bounds = _runs(len(inp.tensor), SERVED_BATCH, workers)
            parts[k] = [None] * len(bounds)
            futures += [pool.submit(run, k, j, inp.tensor[a:b]) for j, (a, b) in enumerate(bounds)]
        for future in as_completed(futures):
            k, complete = future.result()
            if complete:
                logits = [lg for part in parts[k] for lg in part[0]]
                maps = [m for part in parts[k] for m in part[1]]
                yield k, scores_of(models[k], inputs[k], logits, maps), time.perf_counter() - started[k]


def _runs(n: int, batch: int, workers: int) -> list[tuple[int, int]]:
    """``n`` items cut into at most ``workers`` contiguous runs of whole batches, as even as batches allow."""
    batches = -(-n // batch)
    cuts = [round(j * batches / max(1, min(workers, batches))) * batch for j in range(min(workers, batches) + 1)]
    return [(a, min(b, n)) for a, b in zip(cuts, cuts[1:])] if n else [(0, 0)]


@torch.no_grad()
def probabilities(lm: LoadedModel, x: torch.Tensor, batch: int = 64) -> np.ndarray:
    """Calibrated P(severe) of the classification head for a prepared batch (temperature from the card)."""
    out = [calibrated(lm, network_logits(lm.model, x[k : k + batch], lm.pre)) for k in range(0, len(x), batch)]
    return np.concatenate(out) if out else np.zeros(0)


def lesion_map(lm: LoadedModel, volume: Volume, lung_mask: np.ndarray | None, index: int) -> np.ndarray | None:
    """The learned lesion map of slice ``index`` on the slice's own pixel grid, (H, W) float32 in [0, 1] (0 outside
    the part of the slice the network saw), lesion where ≥ 0.5 (the card's map cut drawn at 0.5: ``drawn_map``);
    None for a model without a lesion head. The same contract for 8-bit slices and HU volumes."""
    if not lm.has_lesion_map:
        return None
    with lm.scoring_lock():
        inp = prepare_input(lm, volume, [index], lung_mask)
        return _maps_on_slices(score(lm, inp).lesion, inp.boxes, volume.shape[1:])[0]


def lesion_maps_on_slices(vp: VolumePrediction, shape: tuple[int, int]) -> np.ndarray | None:
    """The learned lesion maps ``predict_volume`` scored, on each scored slice's own grid: (len(vp.slices), H, W)
    float32 in [0, 1], or None for a model without a lesion head. No second pass over the scan."""
    if vp.lesion_net is None or vp.boxes is None:
        return None
    return _maps_on_slices(vp.lesion_net, vp.boxes, shape)


def _maps_on_slices(lesion: np.ndarray, boxes: list, shape: tuple[int, int]) -> np.ndarray:
    out = np.zeros((len(lesion), *shape), np.float32)
    for k in range(len(lesion)):
        out[k] = np.clip(to_slice(lesion[k], boxes[k], shape), 0.0, 1.0)
    return out


@dataclass
class VolumePrediction:
    """Per-slice evidence and the patient-level verdict of one model on one scan."""

    model: str
    slices: list[int]
    p_severe: np.ndarray  # per evaluated slice
    patient_p: float
    verdict: str  # at the card's cut
    seconds: float
    cut: float = 0.5
    involvement: np.ndarray | None = None  # learned involvement % per evaluated slice (lesion models)
    patient_involvement: float | None = None  # learned lesion volume over lung volume of those slices, %
    #: the learned lesion maps as scored, in the network's frame (n, S, S), and where each input came from:
    #: every slice's map on its own grid without scoring again (``lesion_maps_on_slices``; a DICOM SEG)
    lesion_net: np.ndarray | None = field(default=None, repr=False)
    boxes: list | None = field(default=None, repr=False)
    aggregation: str = field(
        default="lung-area-weighted mean of calibrated P(severe) over lung slices; severe at the card's cut"
    )

    def curve(self, n_slices: int, values: np.ndarray | None = None) -> list[float | None]:
        out: list[float | None] = [None] * n_slices
        for i, p in zip(self.slices, self.p_severe if values is None else values):
            out[i] = float(p)
        return out


def in_scope(lm: LoadedModel, lung_mask: np.ndarray | None, index: int) -> bool:
    """Whether slice ``index`` is one this model learned to read (see ``Preprocessing.min_lung_share``)."""
    return lung_mask is None or index in lung_slices(lung_mask, lm.pre.min_lung_share)


def patient_score(p_severe: np.ndarray, lung_area: np.ndarray | None) -> float:
    """The patient-level P(severe): slices weighted by their lung area (module docstring); plain mean without."""
    p = np.asarray(p_severe, dtype=float)
    w = None if lung_area is None else np.asarray(lung_area, dtype=float)
    return float(np.average(p, weights=w)) if w is not None and w.sum() > 0 else float(p.mean())


def prepare_scan(lm: LoadedModel, vol: Volume, lung_mask: np.ndarray | None, prepared: dict | None = None) -> PreparedInput:
    """The input of every slice in the model's scope, from ``prepared`` (a memo shared by the models assessing
    one scan) when a model preparing its input alike already made it."""
    slices = lung_slices(lung_mask, lm.pre.min_lung_share) or list(range(vol.n_slices))
    key = (lm.pre, lm.has_lesion_map, tuple(slices))
    inp = None if prepared is None else prepared.get(key)
    if inp is None:
        inp = prepare_input(lm, vol, slices, lung_mask)
        if prepared is not None:
            prepared[key] = inp
    return inp


def predict_volume(lm: LoadedModel, vol: Volume, lung_mask: np.ndarray | None,
                   prepared: dict | None = None) -> VolumePrediction:
    """Every slice in the model's scope scored; the patient verdict aggregates them (module docstring).
    ``prepared``: a memo shared by the models assessing one scan, so models that prepare their input alike
    (the real-CT set: one preprocessing) prepare the scan once."""
    t0 = time.perf_counter()
    inp = prepare_scan(lm, vol, lung_mask, prepared)
    s = score(lm, inp)
    return volume_prediction(lm, inp, s, lung_mask, time.perf_counter() - t0)


def volume_prediction(lm: LoadedModel, inp: PreparedInput, s: SliceScores, lung_mask: np.ndarray | None,
                      seconds: float) -> VolumePrediction:
    """The patient verdict from the scores of every slice in the model's scope (module docstring)."""
    slices = inp.slices
    patient = patient_score(s.p_severe, None if lung_mask is None else lung_mask.sum(axis=(1, 2))[slices])
    rule = lm.rule
    overall = None
    if s.lesion_area is not None:
        overall = float(100.0 * s.lesion_area.sum() / max(float(s.lung_area.sum()), 1e-6))
    return VolumePrediction(lm.name, slices, s.p_severe, patient, rule.verdict(patient), seconds,
                            rule.cut, s.involvement, overall,
                            lesion_net=s.lesion, boxes=inp.boxes)
