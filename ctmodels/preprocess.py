"""The one preprocessing path from a scan slice to a network input, shared by training and inference.

A checkpoint card records these settings, so the app feeds a model exactly what it was trained
on: window (HU → [0, 1]), optional intensity landmarks, optional lung masking (pixels outside the
lung field set to the value of aerated lung, so the model cannot use the spine, the table or the
body outline as a shortcut), optional lung-ROI crop (paper 001: the lungs' bounding box, or each
lung's box side by side), optional orientation, optional CLAHE (paper 001), resize, normalisation.

One input path for HU and 8-bit slices (models trained on one must score the other):

- *Landmarks*: pre-windowed 8-bit slices come with unknown, differing windows (COVID-19-CT-Seg
  slices put aerated lung near grey 16 and soft tissue near 95; Radiopaedia's near 80 and 232).
  So the darkest clear peak of the lung field's histogram (aerated lung) and the median of the brighter
  tissue around it (chest wall, mediastinum) are mapped to where -850 HU and +40 HU fall in the lung window. A HU
  slice goes through the lung window first, then through the very same mapping.
- *Orientation*: Inf-Net-style slices are rotated 90° (the lungs lie one above the other). With
  ``orient`` the tiles are turned a quarter so the lungs always lie side by side, whichever way
  the slice was stored; left/right and up/down flips are left to augmentation.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi
from scipy import signal
from skimage import exposure, filters

from .imaging.window import Window, apply_window

#: Bumped whenever the code below changes what a network sees (keys caches of prepared data).
PREPROCESS_VERSION = 7
#: A lung slice: lung section at least this share of the scan's largest (apex and base tips below).
LUNG_SLICE_SHARE = 0.05
#: Where aerated lung (-850 HU) and soft tissue (+40 HU) fall in the lung window W1500/L-600.
LANDMARK_LUNG = 0.3333
LANDMARK_SOFT = 0.9267


#: How network inputs are normalised unless a card says otherwise: the one default (Preprocessing, cards).
DEFAULT_NORMALIZATION = {"mean": 0.5, "std": 0.25}


@dataclass(frozen=True)
class Preprocessing:
    """Settings of the input pipeline; round-trips through a model card."""

    size: int = 64
    level: float = -600.0
    width: float = 1500.0
    roi_crop: bool = True
    roi_pad: float = 0.02
    roi_mode: str = "bilateral"  # "box": the lungs' bounding box; "bilateral": each lung's box, side by side
    lung_mask_input: bool = True
    mask_fill: float = 0.327  # [0, 1] value outside the lungs: aerated lung (-860 HU) in the lung window
    clahe: bool = False
    mean: float = DEFAULT_NORMALIZATION["mean"]
    std: float = DEFAULT_NORMALIZATION["std"]
    intensity: str = "window"  # "window": HU through the window, 8-bit as stored; "landmarks": see module doc
    orient: bool = False  # turn tiles so the lungs lie side by side (rotated 8-bit slices)
    # Mask 8-bit inputs too? Their lung field is an intensity estimate that leaves dense consolidation
    # out (it is as bright as the chest wall), so a model that masks only HU inputs, whose 3-D
    # segmentation takes enclosed lesions in and the liver dome out, sets this False (see training.data.prepare).
    mask_8bit: bool = True
    # The slices a model scores: lung section ≥ this share of the scan's largest. 5 % keeps every lung
    # slice; a model trained on mid-chest slices only (the real 8-bit slices start at 0.3 of their
    # patient's largest section) records 0.3, and apex and base crescents are outside its scope.
    min_lung_share: float = LUNG_SLICE_SHARE
    # Score each slice as the mean logit over its four flips (as is, left-right, up-down, both): the
    # real-CT models learned with flips, and averaging them steadied their ranking of slices near the
    # 25 % cut (cross-validated, docs/real_ct.md). Costs four forward passes; Grad-CAM explains the
    # unflipped input.
    flip_average: bool = False

    @property
    def window(self) -> Window:
        return Window("Lung" if (self.level, self.width) == (-600.0, 1500.0) else "Model", self.level, self.width)

    def card_fields(self) -> dict[str, Any]:
        """The ModelCard fields that carry these settings."""
        return {
            "input_size": self.size,
            "window": {"level": self.level, "width": self.width},
            "normalization": {"mean": self.mean, "std": self.std},
            "preprocessing": {"roi_crop": self.roi_crop, "roi_pad": self.roi_pad, "roi_mode": self.roi_mode,
                              "clahe": self.clahe,
                              "lung_mask_input": self.lung_mask_input, "mask_fill": self.mask_fill,
                              "intensity": self.intensity, "orient": self.orient, "mask_8bit": self.mask_8bit,
                              "min_lung_share": self.min_lung_share, "flip_average": self.flip_average},
        }

    @staticmethod
    def from_card(card: Any) -> "Preprocessing":
        pre: Mapping[str, Any] = card.preprocessing or {}
        return Preprocessing(
            size=int(card.input_size),
            level=float(card.window.get("level", -600.0)),
            width=float(card.window.get("width", 1500.0)),
            roi_crop=bool(pre.get("roi_crop", False)),
            roi_pad=float(pre.get("roi_pad", 0.08)),
            roi_mode=str(pre.get("roi_mode", "box")),
            lung_mask_input=bool(pre.get("lung_mask_input", False)),
            mask_fill=float(pre.get("mask_fill", 0.0)),
            clahe=bool(pre.get("clahe", False)),
            mean=float(card.normalization.get("mean", DEFAULT_NORMALIZATION["mean"])),
            std=float(card.normalization.get("std", DEFAULT_NORMALIZATION["std"])),
            intensity=str(pre.get("intensity", "window")),
            orient=bool(pre.get("orient", False)),
            mask_8bit=bool(pre.get("mask_8bit", True)),
            min_lung_share=float(pre.get("min_lung_share", LUNG_SLICE_SHARE)),
            flip_average=bool(pre.get("flip_average", False)),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


MIN_ROI_PIXELS = 64


def lung_box(mask: np.ndarray | None, pad: float) -> tuple[int, int, int, int] | None:
    """Box (r0, r1, c0, c1) around the lungs of one slice, each side padded by ``pad``; None without lung."""
    if mask is None or mask.sum() < MIN_ROI_PIXELS:
        return None
    rows = np.nonzero(mask.any(axis=1))[0]
    cols = np.nonzero(mask.any(axis=0))[0]
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    pr, pc = pad * (r1 - r0), pad * (c1 - c0)
    return int(round(r0 - pr)), int(round(r1 + pr)), int(round(c0 - pc)), int(round(c1 + pc))


def crop(img: np.ndarray, box: tuple[int, int, int, int], fill: float = 0.0) -> np.ndarray:
    """Crop ``box`` from ``img``, padding with ``fill`` where the box leaves the image."""
    r0, r1, c0, c1 = box
    out = np.full((r1 - r0, c1 - c0), fill, dtype=img.dtype)
    sr0, sr1, sc0, sc1 = max(r0, 0), min(r1, img.shape[0]), max(c0, 0), min(c1, img.shape[1])
    if sr1 > sr0 and sc1 > sc0:
        out[sr0 - r0 : sr1 - r0, sc0 - c0 : sc1 - c0] = img[sr0:sr1, sc0:sc1]
    return out


def to_unit(values: np.ndarray, is_hu: bool, pre: Preprocessing) -> np.ndarray:
    """HU through the model's window, or 8-bit intensities / 255, to float32 in [0, 1]."""
    if is_hu:
        return apply_window(values, pre.window)
    return np.clip(np.asarray(values, dtype=np.float32) / 255.0, 0.0, 1.0)


def _padded_box(field: np.ndarray, pad: float) -> tuple[slice, slice]:
    r0, r1, c0, c1 = lung_box(field, pad)  # type: ignore[misc]
    return slice(max(r0, 0), max(r1, 0)), slice(max(c0, 0), max(c1, 0))


#: A histogram peak of the lung field counts as aerated lung when it stands out by this share of the highest one.
AERATED_PEAK_PROMINENCE = 0.2


def _aerated(values: np.ndarray, bins: int = 128) -> float:
    """Aerated lung: the darkest clear peak of the field's (smoothed) histogram, not merely its highest.

    When ground glass or consolidation fills most of a lung, its grey is the field's most common one; mapped
    onto aerated lung it would show the network a diffusely diseased lung as a clear one (Inf-Net slices with
    58-78 % involvement read 4-30 %). What aerated lung is left is the darkest peak that stands out. On the
    other 1280 real slices and on HU the darkest clear peak is the highest one (docs/real_ct.md).
    """
    hist, edges = np.histogram(values, bins=bins, range=(0.0, 1.0))
    hist = ndi.gaussian_filter1d(hist.astype(float), 1.5)
    peaks, _ = signal.find_peaks(hist, prominence=AERATED_PEAK_PROMINENCE * hist.max())
    i = int(peaks[0]) if len(peaks) else int(np.argmax(hist))  # a peak on the histogram's edge is not a clear one
    return float((edges[i] + edges[i + 1]) / 2)


def landmarks(img: np.ndarray, field: np.ndarray | None) -> tuple[float, float] | None:
    """(aerated lung, soft tissue) intensities of a [0, 1] slice, or None without a usable lung field.

    Aerated lung: the darkest clear peak of the lung field's histogram (robust to lesions, small or diffuse).
    Soft tissue: the median of the pixels outside the field, in the lungs' box padded by a fifth, that are brighter
    than the box's Otsu threshold (which splits lung from tissue): chest wall and mediastinum. A
    threshold computed on the tissue alone would split fat from muscle and bone instead, and move
    with the crop (measured: patient-grouped CV AUC 0.90 against 0.98).
    """
    if field is None or field.sum() < MIN_ROI_PIXELS:
        return None
    lung = _aerated(img[field])
    rows, cols = _padded_box(field, 0.2)
    box, inside = img[rows, cols], field[rows, cols]
    if float(box.max() - box.min()) <= 1e-3:
        return None
    around = box[~inside]
    bright = around[around > filters.threshold_otsu(box)]  # lung vs tissue: the box's two modes
    if bright.size < MIN_ROI_PIXELS:
        return None
    return lung, float(np.median(bright))


def normalise_landmarks(img: np.ndarray, field: np.ndarray | None) -> np.ndarray:
    """Map the slice's aerated-lung and soft-tissue intensities onto the lung window's (module doc)."""
    marks = landmarks(img, field)
    if marks is None:
        return img
    lung, soft = marks
    gain = (LANDMARK_SOFT - LANDMARK_LUNG) / max(soft - lung, 0.05)
    return np.clip(LANDMARK_LUNG + (img - lung) * gain, 0.0, 1.0).astype(np.float32)


Box = tuple[int, int, int, int]  # (r0, r1, c0, c1) on the slice
Tile = tuple[Box, Box, int]  # (box on the slice, region of the network input it fills, quarter turns CCW)


def _split(mask: np.ndarray, axis: int) -> tuple[int, float] | None:
    """The emptiest line between the lungs along ``axis`` (1: a column, 0: a row) and how full it is."""
    profile = mask.sum(axis=0) if axis == 1 else mask.sum(axis=1)
    nz = np.nonzero(profile)[0]
    if nz.size == 0:
        return None
    a0, a1 = nz[0], nz[-1] + 1
    lo, hi = a0 + int(0.3 * (a1 - a0)), a0 + int(0.7 * (a1 - a0))
    if hi <= lo:
        return None
    i = int(lo + np.argmin(profile[lo:hi]))
    return i, float(profile[i]) / max(float(profile.max()), 1.0)


def _halves(mask: np.ndarray, orient: bool) -> tuple[np.ndarray, np.ndarray, int] | None:
    """The two lungs (in the order they fill the input, left then right) and the quarter turns to apply."""
    cols = _split(mask, 1)
    rows = _split(mask, 0) if orient else None
    if cols is None and rows is None:
        return None
    axis, (i, _) = (0, rows) if rows is not None and (cols is None or rows[1] < cols[1]) else (1, cols)
    first, second = mask.copy(), mask.copy()
    if axis == 1:
        first[:, i:] = False
        second[:, :i] = False
        return first, second, 0
    first[i:, :] = False  # top lung: on the left once the slice is turned a quarter anticlockwise
    second[:i, :] = False
    return first, second, 1


def lung_tiles(mask: np.ndarray | None, pre: Preprocessing, shape: tuple[int, int] | None = None) -> list[Tile] | None:
    """Where each part of the network input comes from; None means the whole slice."""
    if not pre.roi_crop:
        return None
    s = pre.size
    if pre.roi_mode == "bilateral" and mask is not None and mask.sum() >= MIN_ROI_PIXELS:
        halves = _halves(mask, pre.orient)
        if halves is not None:
            first, second, turns = halves
            bl, br = lung_box(first, pre.roi_pad), lung_box(second, pre.roi_pad)
            if bl is not None and br is not None:
                half = s // 2
                return [(bl, (0, s, 0, half), turns), (br, (0, s, half, s), turns)]
    box = lung_box(mask, pre.roi_pad)
    if box is None:
        return None
    h, w = shape if shape is not None else (box[1] - box[0], box[3] - box[2])
    turns = 1 if pre.orient and h > 1.15 * w else 0  # one lung only: a tall slice is a rotated one
    return [(box, (0, s, 0, s), turns)]


def _resize(img: np.ndarray, h: int, w: int) -> np.ndarray:
    t = torch.from_numpy(np.ascontiguousarray(img))[None, None]
    return F.interpolate(t, size=(h, w), mode="bilinear", antialias=True, align_corners=False)[0, 0].numpy()


def masks_input(pre: Preprocessing, is_hu: bool) -> bool:
    """Whether pixels outside the lung field are set to aerated-lung grey for this kind of input."""
    return pre.lung_mask_input and (is_hu or pre.mask_8bit)


def prepare_slice(
    values: np.ndarray, is_hu: bool, pre: Preprocessing, lung_mask: np.ndarray | None = None,
    mask: bool | None = None,
) -> tuple[np.ndarray, list[Tile] | None]:
    """One slice → float32 (size, size) in [0, 1], and the tiles it was cut from (None: whole slice).

    ``mask`` overrides ``masks_input`` (training shows 8-bit slices masked as well, with a lung field
    that includes their lesions, so the model knows the masked look HU inputs have).
    """
    img = to_unit(values, is_hu, pre)
    has_field = lung_mask is not None and lung_mask.sum() >= MIN_ROI_PIXELS
    if pre.intensity == "landmarks":
        img = normalise_landmarks(img, lung_mask if has_field else None)
    masked = masks_input(pre, is_hu) if mask is None else mask
    if masked and lung_mask is not None and lung_mask.any():
        img = np.where(lung_mask, img, np.float32(pre.mask_fill))
    tiles = lung_tiles(lung_mask, pre, img.shape)
    if pre.clahe:
        img = exposure.equalize_adapthist(img, clip_limit=0.01).astype(np.float32)
    if tiles is None:
        return np.clip(_resize(img, pre.size, pre.size), 0, 1), None
    out = np.empty((pre.size, pre.size), np.float32)
    fill = pre.mask_fill if masked else 0.0
    for box, (r0, r1, c0, c1), turns in tiles:
        part = np.rot90(crop(img, box, fill=fill), turns)
        out[r0:r1, c0:c1] = _resize(part, r1 - r0, c1 - c0)
    return np.clip(out, 0, 1), tiles


def to_network(mask: np.ndarray, tiles: list[Tile] | None, size: int) -> np.ndarray:
    """A slice-grid mask (bool or [0, 1]) in the network's frame, cut, turned and resized exactly as
    ``prepare_slice`` cut the image: float32 (size, size), each pixel the share of it the mask covers."""
    m = np.asarray(mask, dtype=np.float32)
    if tiles is None:
        return np.clip(_resize(m, size, size), 0, 1)
    out = np.zeros((size, size), np.float32)
    for box, (r0, r1, c0, c1), turns in tiles:
        out[r0:r1, c0:c1] = _resize(np.rot90(crop(m, box, 0.0), turns), r1 - r0, c1 - c0)
    return np.clip(out, 0, 1)


def to_slice(net_map: np.ndarray, tiles, shape: tuple[int, int]) -> np.ndarray:
    """A network-frame map (CAM, lesion probability) back on the slice: each input region onto the box it
    came from, turned back when the tile was turned to lay the lungs side by side; 0 outside every box."""
    h, w = shape
    if tiles is None:
        t = torch.from_numpy(np.ascontiguousarray(net_map, dtype=np.float32))[None, None]
        return F.interpolate(t, size=(h, w), mode="bilinear", align_corners=False)[0, 0].numpy()
    if isinstance(tiles[0], (int, np.integer)):  # a single (r0, r1, c0, c1) box
        tiles = [(tuple(tiles), (0, net_map.shape[0], 0, net_map.shape[1]), 0)]
    out = np.zeros((h, w), np.float32)
    for tile in tiles:
        (r0, r1, c0, c1), (ir0, ir1, ic0, ic1) = tile[0], tile[1]
        turns = tile[2] if len(tile) > 2 else 0
        region = np.rot90(net_map[ir0:ir1, ic0:ic1], -turns)
        part = torch.from_numpy(np.ascontiguousarray(region, dtype=np.float32))[None, None]
        resized = F.interpolate(part, size=(r1 - r0, c1 - c0), mode="bilinear", align_corners=False)[0, 0].numpy()
        sr0, sr1, sc0, sc1 = max(r0, 0), min(r1, h), max(c0, 0), min(c1, w)
        if sr1 > sr0 and sc1 > sc0:
            region = resized[sr0 - r0 : sr1 - r0, sc0 - c0 : sc1 - c0]
            out[sr0:sr1, sc0:sc1] = np.maximum(out[sr0:sr1, sc0:sc1], region)
    return out


def pixel_areas(tiles: list[Tile] | None, size: int, shape: tuple[int, int]) -> np.ndarray:
    """Slice pixels per network pixel, (size, size) float32: areas measured in the network's frame
    (a lesion map's) add up to areas on the slice, however differently each lung's tile was scaled."""
    out = np.zeros((size, size), np.float32)
    if tiles is None:
        out[:] = shape[0] * shape[1] / float(size * size)
        return out
    for (r0, r1, c0, c1), (ir0, ir1, ic0, ic1), _ in tiles:
        out[ir0:ir1, ic0:ic1] = (r1 - r0) * (c1 - c0) / float(max((ir1 - ir0) * (ic1 - ic0), 1))
    return out


def lung_slices(lung_mask: np.ndarray | None, share: float = LUNG_SLICE_SHARE) -> list[int]:
    """Slices whose lung section is at least ``share`` of the largest; none without a lung mask (the caller
    decides: ``predict_volume`` then scores every slice)."""
    if lung_mask is None:
        return []
    area = lung_mask.sum(axis=(1, 2))
    if area.max() == 0:
        return []
    return [int(i) for i in np.nonzero(area >= share * area.max())[0]]


#: The views a flip-averaging model scores: as is, left-right, up-down, both (dims of an (N, C, H, W) batch).
FLIPS: tuple[tuple[int, ...], ...] = ((), (-1,), (-2,), (-1, -2))


def normalize(batch: torch.Tensor, pre: Preprocessing) -> torch.Tensor:
    """[0, 1] inputs (N, 1, H, W) → the network's input scale."""
    return (batch - pre.mean) / pre.std


def network_logits(model: torch.nn.Module, x: torch.Tensor, pre: Preprocessing) -> torch.Tensor:
    """The logits a model's card says to score with: one pass, or the mean over four flips."""
    if not pre.flip_average:
        return model(x)
    return torch.stack([model(x.flip(dims) if dims else x) for dims in FLIPS]).float().mean(0)


def network_outputs(model: torch.nn.Module, x: torch.Tensor, pre: Preprocessing) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Class logits as ``network_logits`` scores them, and for a net with a lesion head its lesion probability
    (N, S, S) from the same passes (each flip's map turned back, then averaged); None without a head."""
    if getattr(model, "lesion_head", None) is None:
        return network_logits(model, x, pre), None
    views = FLIPS if pre.flip_average else FLIPS[:1]
    logits, maps = [], []
    for dims in views:
        lg, les = model.forward_both(x.flip(dims) if dims else x)
        logits.append(lg.float())
        p = torch.sigmoid(les.float())[:, 0]
        maps.append(p.flip(dims) if dims else p)  # (N, S, S): the same last two dims as the batch's
    return torch.stack(logits).mean(0), torch.stack(maps).mean(0)


def lesion_areas(lesion: np.ndarray, field: np.ndarray, area: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per slice, in slice pixels: the learned lesion area and the lung it is a share of.

    ``lesion``: probabilities, ``field``: the lung field's share of each pixel, ``area``: slice pixels per
    pixel, all (n, S, S) in the network's frame. The lung is the field plus the lesion found outside it:
    an 8-bit field leaves dense consolidation out (it is as bright as the chest wall), as the derived
    labels' lung estimate adds the infection mask back in. Soft areas (sums of probabilities) rank slices
    more smoothly than thresholded ones.
    """
    les = (lesion * area).sum(axis=(-2, -1))
    lung = (field * area).sum(axis=(-2, -1)) + (lesion * (1.0 - field) * area).sum(axis=(-2, -1))
    return les.astype(np.float64), lung.astype(np.float64)


def shift_lesion(lesion: np.ndarray, bias: float) -> np.ndarray:
    """Probabilities as the head gives them once its logits are shifted by ``bias``."""
    z = np.log(np.clip(lesion, 1e-6, 1 - 1e-6) / np.clip(1 - lesion, 1e-6, 1.0))
    return (1.0 / (1.0 + np.exp(-(z + bias)))).astype(np.float32)


def drawn_map(lesion: np.ndarray, cut: float) -> np.ndarray:
    """The lesion map as it is drawn and exported: probabilities shifted in logit so that ``cut`` (where the
    map marks lesion, chosen on validation data: ``ModelCard.lesion_map``) reads 0.5. The learned areas sum
    the probabilities before the shift, which are calibrated to equal the masks' area; a soft map with the
    right area marks too little at 0.5 (its edges are a halo of small probabilities), so the cut that
    matches the masks' outline lies lower."""
    return lesion if cut == 0.5 else shift_lesion(lesion, -float(np.log(cut / (1 - cut))))
