"""One synthetic COVID-19 chest-CT patient: anatomy + vessels + lesions + scanner blur and noise.

Severity is the percentage of lung volume covered by lesions (ground-glass opacity and
consolidation), the quantity the MosMed CT-0…CT-4 grades bin and our mild/severe label
thresholds (default 25 %, the CT-1/CT-2 boundary).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from ...verdict import DEFAULT_THRESHOLD_PCT
from ..volume import Volume
from .anatomy import Habitus, build_slice
from .vessels import draw_vessels, vessel_tree_samples

HU_GGO = -560.0
HU_CONSOLIDATION = -10.0


@dataclass(frozen=True)
class PhantomConfig:
    """Geometry and scanner settings shared by every patient of a dataset."""

    size: int = 256
    n_slices: int = 24
    pixel_mm: float = 1.4
    slice_mm: float = 10.0
    noise_hu: float = 20.0


@dataclass
class PhantomPatient:
    """A generated patient with exact ground truth."""

    patient_id: str
    hu: np.ndarray  # int16 (S, H, W)
    lung: np.ndarray  # uint8 (S, H, W): 0, 1 right lung, 2 left lung
    lesion: np.ndarray  # uint8 (S, H, W): 0, 1 ground glass, 2 consolidation
    spacing: tuple[float, float, float]
    target_pct: float
    meta: dict = field(default_factory=dict)

    @property
    def involvement_pct(self) -> float:
        """True % of lung volume involved, from the masks."""
        lung = np.count_nonzero(self.lung)
        return 100.0 * np.count_nonzero(self.lesion) / lung if lung else 0.0

    def slice_involvement(self) -> np.ndarray:
        """Per-slice % of lung involved; NaN on slices without lung."""
        lung = np.count_nonzero(self.lung, axis=(1, 2)).astype(float)
        les = np.count_nonzero(self.lesion, axis=(1, 2)).astype(float)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(lung > 0, 100.0 * les / lung, np.nan)

    def label(self, threshold_pct: float = DEFAULT_THRESHOLD_PCT) -> str:
        return "severe" if self.involvement_pct >= threshold_pct else "mild"

    def to_volume(self) -> Volume:
        z = tuple(-(i + 0.5) * self.spacing[0] for i in range(self.hu.shape[0]))
        return Volume(
            array=self.hu.astype(np.float32),
            is_hu=True,
            spacing=self.spacing,
            source_format="phantom",
            meta={"Modality": "CT", "synthetic": True},
            slice_positions=z,
        )


def mm_grid(cfg: PhantomConfig) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    """Pixel-centre coordinates in mm (x to patient left, y to posterior) and the grid origin."""
    half = cfg.size * cfg.pixel_mm / 2.0
    coords = (np.arange(cfg.size) + 0.5) * cfg.pixel_mm - half
    y, x = np.meshgrid(coords, coords, indexing="ij")
    return x.astype(np.float32), y.astype(np.float32), (-half, -half)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: tuple[float, ...]) -> np.ndarray:
    n = ndi.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma, mode="reflect")
    return n / (n.std() + 1e-6)


def _lesion_field(
    rng: np.random.Generator, lung: np.ndarray, cfg: PhantomConfig, y: np.ndarray
) -> np.ndarray:
    """A smooth random field whose top quantile inside the lung becomes the lesions.

    Weighted towards the periphery, posterior and lower zones: the COVID-19 pattern of
    subpleural, dependent, basal ground-glass opacities. Computed at a quarter of the pixels
    (it is smooth) and upsampled, which keeps a 256x256x24 patient well under a second.
    """
    s, h, w = lung.shape
    k = 2
    small = lung[:, ::k, ::k]
    blob_px = rng.uniform(4.0, 7.0) / k
    f = _smooth_noise(rng, small.shape, (0.7, blob_px, blob_px))
    dist_mm = np.stack([ndi.distance_transform_edt(small[i] > 0) for i in range(s)]) * cfg.pixel_mm * k
    periph = np.exp(-dist_mm / 14.0)
    post = np.clip((y[::k, ::k] + 110.0) / 220.0, 0.0, 1.0)[None]
    level = np.linspace(0.0, 1.0, s, dtype=np.float32)[:, None, None]
    side = np.where(small == 1, 1.0, -1.0) * rng.uniform(-0.4, 0.4)
    field = (
        f
        + rng.uniform(0.8, 1.6) * periph
        + rng.uniform(0.2, 0.9) * post
        + rng.uniform(0.0, 0.8) * level
        + side
    ).astype(np.float32)
    return _upsample2(field)[:, :h, :w]


def _upsample2(f: np.ndarray) -> np.ndarray:
    """Double the last two axes by linear interpolation (cheap; ndi.zoom costs 10x more)."""
    for axis in (1, 2):
        nxt = np.concatenate([np.take(f, np.arange(1, f.shape[axis]), axis=axis), np.take(f, [-1], axis=axis)], axis)
        out = np.stack([f, (f + nxt) / 2.0], axis=axis + 1)
        shape = list(f.shape)
        shape[axis] *= 2
        f = out.reshape(shape)
    return f


def _place_lesions(
    rng: np.random.Generator, lung: np.ndarray, target_pct: float, cfg: PhantomConfig, y: np.ndarray
) -> np.ndarray:
    """Lesion label map (1 GGO, 2 consolidation) covering ``target_pct`` % of the lung."""
    lesion = np.zeros(lung.shape, dtype=np.uint8)
    in_lung = lung > 0
    n_lung = int(in_lung.sum())
    if target_pct <= 0 or n_lung == 0:
        return lesion
    field = _lesion_field(rng, lung, cfg, y)
    vals = field[in_lung]
    k = int(round(n_lung * min(target_pct, 95.0) / 100.0))
    if k == 0:
        return lesion
    cut = np.partition(vals, n_lung - k)[n_lung - k]
    ggo = in_lung & (field >= cut)
    lesion[ggo] = 1
    # Consolidation: dense cores inside the ground glass, kept off the pleura and off the lung's
    # upper/lower surfaces, so a ground-glass halo surrounds every core in 3-D (as in COVID-19).
    frac = 0.05 + 0.30 * min(1.0, target_pct / 60.0)
    st2 = ndi.generate_binary_structure(2, 1)
    deep_lung = ndi.binary_erosion(in_lung, ndi.generate_binary_structure(3, 1))
    eligible = np.zeros_like(ggo)
    for i in range(lung.shape[0]):
        eligible[i] = ndi.binary_erosion(ggo[i], st2, iterations=3) & ndi.binary_erosion(
            deep_lung[i], st2, iterations=5
        )
    n_core = int(frac * k)
    ev = field[eligible]
    if n_core > 0 and ev.size > n_core:
        core_cut = np.partition(ev, ev.size - n_core)[ev.size - n_core]
        lesion[eligible & (field >= core_cut)] = 2
    elif n_core > 0:
        lesion[eligible] = 2
    return lesion


def generate_patient(
    patient_id: str, target_pct: float, seed: int, cfg: PhantomConfig = PhantomConfig()
) -> PhantomPatient:
    """Build one patient deterministically from ``seed``."""
    rng = np.random.default_rng(seed)
    habitus = Habitus.sample(rng)
    x, y, origin = mm_grid(cfg)
    s = cfg.n_slices
    levels = (np.arange(s) + 0.5) / s
    hu = np.empty((s, cfg.size, cfg.size), dtype=np.float32)
    lung = np.empty((s, cfg.size, cfg.size), dtype=np.uint8)
    for i, t in enumerate(levels):
        sl = build_slice(x, y, float(t), habitus)
        hu[i], lung[i] = sl.hu, sl.lung

    lesion = _place_lesions(rng, lung, target_pct, cfg, y)
    texture = _smooth_noise(rng, hu.shape, (0.5, 2.0, 2.0))
    ggo = lesion == 1
    cons = lesion == 2
    hu[ggo] = HU_GGO + 45.0 * texture[ggo]
    hu[cons] = HU_CONSOLIDATION + 20.0 * texture[cons]

    hz = 0.45 * s * cfg.slice_mm
    hila = {1: (-42.0, -8.0, hz), 2: (42.0, -8.0, hz)}
    samples = vessel_tree_samples(rng, lung, (x, y), cfg.slice_mm, hila)
    draw_vessels(hu, (lung > 0) & ~cons, samples, cfg.pixel_mm, cfg.slice_mm, origin)

    # Scanner: in-plane partial-volume blur, then correlated quantum noise.
    hu = ndi.gaussian_filter(hu, (0.0, 0.7, 0.7))
    noise = _smooth_noise(rng, hu.shape, (0.0, 0.6, 0.6)) * cfg.noise_hu
    hu = np.clip(np.rint(hu + noise), -1024, 3071).astype(np.int16)
    return PhantomPatient(
        patient_id=patient_id,
        hu=hu,
        lung=lung,
        lesion=lesion,
        spacing=(cfg.slice_mm, cfg.pixel_mm, cfg.pixel_mm),
        target_pct=float(target_pct),
        meta={"seed": seed, "habitus": habitus.__dict__},
    )


def sample_severities(
    n: int, rng: np.random.Generator, threshold_pct: float = DEFAULT_THRESHOLD_PCT, gap_pct: float = 14.0
) -> list[float]:
    """Target involvement for ``n`` patients: half mild, half severe, shuffled.

    Mild patients lie below ``threshold - gap/2`` (about one in eight fully normal, CT-0),
    severe ones above ``threshold + gap/2``. The gap keeps the demo labels unambiguous; set it
    to 0 for a continuous spread.
    """
    lo_max = max(0.5, threshold_pct - gap_pct / 2.0)
    hi_min = min(90.0, threshold_pct + gap_pct / 2.0)
    out = []
    for i in range(n):
        if i % 2 == 0:
            out.append(0.0 if rng.random() < 0.12 else float(rng.uniform(1.0, lo_max)))
        else:
            out.append(float(rng.uniform(hi_min, min(75.0, hi_min + 40.0))))
    rng.shuffle(out)
    return out
