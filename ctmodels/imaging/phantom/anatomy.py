"""Procedural chest-CT anatomy in Hounsfield units.

A phantom patient is built slice by slice in millimetre coordinates: x runs patient-right →
patient-left (image left → right), y anterior → posterior (image top → bottom), and slice 0 is
the most superior. Structures are drawn in HU order (air, fat, muscle, bone, mediastinum,
abdomen, lung) so the ground-truth lung mask is exact by construction. Lesions and noise are
added afterwards by ``lesions.py`` and ``generate.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Hounsfield units of the tissues drawn (unenhanced CT).
HU_AIR = -1000.0
HU_FAT = -100.0
HU_MEDIASTINAL_FAT = -80.0
HU_MUSCLE = 45.0
HU_BLOOD = 40.0
HU_MYOCARDIUM = 45.0
HU_LIVER = 60.0
HU_SPLEEN = 50.0
HU_STOMACH = 25.0
HU_CSF = 10.0
HU_CANCELLOUS = 250.0
HU_CORTICAL = 700.0
HU_RIB = 550.0
HU_LUNG = -860.0


@dataclass(frozen=True)
class Habitus:
    """Per-patient body shape, drawn once from the patient's random generator."""

    body_a: float  # lateral semi-axis of the body (mm)
    body_b: float  # antero-posterior semi-axis (mm)
    fat: float  # subcutaneous fat thickness (mm)
    muscle: float  # chest-wall muscle thickness (mm)
    heart_dx: float  # heart centre offset to the patient's left (mm)
    heart_scale: float
    apex_t: float  # level (0 top .. 1 bottom) of the lung apices
    dome_right_t: float  # top of the right hemidiaphragm (liver dome), higher than the left
    dome_left_t: float
    rib_phase: float

    @staticmethod
    def sample(rng: np.random.Generator) -> "Habitus":
        return Habitus(
            body_a=rng.uniform(140, 165),
            body_b=rng.uniform(98, 115),
            fat=rng.uniform(7, 20),
            muscle=rng.uniform(7, 11),
            heart_dx=rng.uniform(12, 24),
            heart_scale=rng.uniform(0.9, 1.1),
            apex_t=rng.uniform(0.03, 0.09),
            dome_right_t=rng.uniform(0.64, 0.72),
            dome_left_t=rng.uniform(0.70, 0.78),
            rib_phase=rng.uniform(0, np.pi / 7),
        )


@dataclass
class AnatomySlice:
    """One axial slice before lesions and noise."""

    hu: np.ndarray  # float32 (H, W)
    lung: np.ndarray  # uint8 (H, W): 0 none, 1 right lung, 2 left lung (Kaggle lung_mask convention)
    vessel_room: np.ndarray  # bool (H, W): where intrapulmonary vessels may be drawn


def _ellipse(x: np.ndarray, y: np.ndarray, cx: float, cy: float, a: float, b: float) -> np.ndarray:
    return ((x - cx) / a) ** 2 + ((y - cy) / b) ** 2 <= 1.0


def _disc(x: np.ndarray, y: np.ndarray, cx: float, cy: float, r: float) -> np.ndarray:
    return (x - cx) ** 2 + (y - cy) ** 2 <= r * r


def _bump(t: float, start: float, end: float) -> float:
    """Smooth 0→1→0 profile over [start, end] (sine bump), 0 outside."""
    if t <= start or t >= end:
        return 0.0
    return float(np.sin(np.pi * (t - start) / (end - start)))


def build_slice(x: np.ndarray, y: np.ndarray, t: float, h: Habitus) -> AnatomySlice:
    """Draw the anatomy at level ``t`` (0 = top of the scan, 1 = bottom) on the mm grid (x, y)."""
    hu = np.full(x.shape, HU_AIR, dtype=np.float32)

    # Body outline: slightly narrower at the top (thoracic inlet) and wider at the lung bases.
    widen = 0.88 + 0.12 * min(1.0, t / 0.5)
    a, b = h.body_a * widen, h.body_b * (0.92 + 0.08 * min(1.0, t / 0.5))
    body = _ellipse(x, y, 0.0, 0.0, a, b)
    hu[body] = HU_FAT
    inner_a, inner_b = a - h.fat, b - h.fat
    muscle_region = _ellipse(x, y, 0.0, 0.0, inner_a, inner_b)
    hu[muscle_region] = HU_MUSCLE
    cav_a, cav_b = inner_a - h.muscle - 9.0, inner_b - h.muscle - 9.0
    cav_cy = 3.0
    cavity = _ellipse(x, y, 0.0, cav_cy, cav_a, cav_b)
    hu[cavity] = HU_MEDIASTINAL_FAT

    # Ribs: cross-sections on a ring just outside the cavity; their angle drifts with level.
    ring_a, ring_b = cav_a + 5.0, cav_b + 5.0
    phase = h.rib_phase + 2.2 * t
    for k in range(7):
        ang = phase + k * np.pi / 7.0
        if abs(np.sin(ang)) > 0.93:  # leave the sternum and the spine to their own drawing
            continue
        for side in (-1.0, 1.0):
            cx = side * ring_a * abs(np.cos(ang))
            cy = cav_cy + ring_b * np.sin(ang)
            hu[_ellipse(x, y, cx, cy, 6.0, 4.0)] = HU_RIB

    # Sternum (anterior) in the mid chest.
    if 0.2 < t < 0.8:
        st = (np.abs(x) < 13.0) & (np.abs(y - (cav_cy - cav_b - 4.0)) < 4.5)
        hu[st] = HU_CANCELLOUS + 150.0

    # Spine: vertebral body with cortex, canal with CSF, paraspinal muscles.
    ys = cav_cy + cav_b * 0.62
    para = _ellipse(x, y, 0.0, ys + 12.0, 40.0, 30.0)
    hu[para & cavity] = HU_MUSCLE
    hu[_disc(x, y, 0.0, ys, 19.0)] = HU_CORTICAL
    hu[_disc(x, y, 0.0, ys, 16.0)] = HU_CANCELLOUS
    hu[_disc(x, y, 0.0, ys + 27.0, 10.0)] = HU_CORTICAL
    hu[_disc(x, y, 0.0, ys + 27.0, 7.5)] = HU_CSF

    # Mediastinum: a midline band from sternum to spine, wider in front, plus the heart and vessels.
    med = _ellipse(x, y, 3.0, cav_cy - 8.0, 24.0 + 10.0 * _bump(t, 0.15, 0.9), cav_b + 2.0)
    heart_amp = _bump(t, 0.40, 0.92) * h.heart_scale
    heart = np.zeros_like(med)
    if heart_amp > 0.05:
        heart = _ellipse(x, y, h.heart_dx, cav_cy - 0.25 * cav_b, 58.0 * heart_amp, 48.0 * heart_amp)
    aorta_desc = _disc(x, y, 22.0, ys - 22.0, 12.0) if t > 0.28 else np.zeros_like(med)
    aorta_asc = _disc(x, y, -14.0, cav_cy - 0.35 * cav_b, 15.0) if 0.3 < t < 0.5 else np.zeros_like(med)
    arch = (
        _ellipse(x, y, 4.0, cav_cy - 0.1 * cav_b, 28.0, 12.0) if 0.25 < t < 0.31 else np.zeros_like(med)
    )
    pulm_trunk = _disc(x, y, 12.0, cav_cy - 0.3 * cav_b, 13.0) if 0.38 < t < 0.47 else np.zeros_like(med)
    paravertebral = _disc(x, y, 0.0, ys, 30.0)
    mediastinum = (med | heart | aorta_desc | aorta_asc | arch | pulm_trunk | paravertebral) & cavity

    # Diaphragm domes: the cross-section of each dome grows below its top.
    dome_r = _disc_radius(t, h.dome_right_t)
    dome_l = _disc_radius(t, h.dome_left_t)
    liver = _disc(x, y, -0.35 * cav_a, cav_cy + 0.05 * cav_b, dome_r) if dome_r > 0 else np.zeros_like(med)
    left_abd = _disc(x, y, 0.38 * cav_a, cav_cy - 0.05 * cav_b, dome_l) if dome_l > 0 else np.zeros_like(med)

    # Lungs fill the rest of the cavity, shrunk towards the apices.
    lungs = cavity & ~mediastinum & ~liver & ~left_abd
    if t < 0.34:
        scale = np.sqrt(max(0.0, (t - h.apex_t) / (0.34 - h.apex_t)))
        apex_r = 0.95 * cav_b * scale
        apex_shape = _disc(x, y, -0.5 * cav_a, cav_cy - 0.1 * cav_b, apex_r) | _disc(
            x, y, 0.5 * cav_a, cav_cy - 0.1 * cav_b, apex_r
        )
        lungs &= apex_shape

    hu[mediastinum] = HU_MEDIASTINAL_FAT
    hu[heart] = HU_MYOCARDIUM
    for vessel in (aorta_desc, aorta_asc, arch, pulm_trunk):
        hu[vessel & cavity] = HU_BLOOD
    hu[_disc(x, y, 0.0, ys, 19.0)] = HU_CORTICAL
    hu[_disc(x, y, 0.0, ys, 16.0)] = HU_CANCELLOUS
    hu[liver & cavity] = HU_LIVER
    if dome_l > 0:
        spleen = left_abd & (y > cav_cy + 0.15 * cav_b)
        hu[left_abd & cavity] = HU_STOMACH
        hu[spleen & cavity] = HU_SPLEEN
        # Gastric fundus gas just under the left dome.
        gas = _ellipse(x, y, 0.38 * cav_a, cav_cy - 0.2 * cav_b, 0.45 * dome_l, 0.3 * dome_l)
        if dome_l < 45.0:
            hu[gas & left_abd & cavity] = HU_AIR

    # Lung parenchyma: denser posteriorly (dependent density).
    post = np.clip((y - cav_cy + cav_b) / (2 * cav_b), 0.0, 1.0)
    hu[lungs] = HU_LUNG + 45.0 * post[lungs]

    # Airway: trachea down to the carina, then two main bronchi towards the hila (mediastinal part).
    ty = cav_cy - 0.2 * cav_b
    if t < 0.36:
        _airway(hu, x, y, 0.0, ty, 9.5, mediastinum | ~cavity & body)
    elif t < 0.46:
        off = 10.0 + 34.0 * (t - 0.36) / 0.10
        for side in (-1.0, 1.0):
            _airway(hu, x, y, side * off, ty + 4.0, 6.0, mediastinum)

    lung_label = np.zeros(x.shape, dtype=np.uint8)
    lung_label[lungs & (x < 0)] = 1  # patient right lung (image left)
    lung_label[lungs & (x >= 0)] = 2
    return AnatomySlice(hu=hu, lung=lung_label, vessel_room=lungs)


def _disc_radius(t: float, top: float) -> float:
    """Radius (mm) of a diaphragm dome's cross-section at level t: a paraboloid opening downward."""
    if t <= top:
        return 0.0
    return float(np.sqrt((t - top) / 0.30) * 120.0)


def _airway(hu: np.ndarray, x: np.ndarray, y: np.ndarray, cx: float, cy: float, r: float, room: np.ndarray) -> None:
    wall = _disc(x, y, cx, cy, r + 2.0) & room
    lumen = _disc(x, y, cx, cy, r) & room
    hu[wall] = HU_MUSCLE
    hu[lumen] = HU_AIR
