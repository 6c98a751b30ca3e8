"""One input path for 8-bit and HU: the 8-bit lung field, intensity landmarks, orientation, CAMs turned back."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from ctmodels.preprocess import to_slice
from ctmodels.imaging import Volume, read_any
from ctmodels.imaging.lung import segment_lungs
from ctmodels.imaging.lung_field import estimate_lung_field, lung_field
from ctmodels.imaging.phantom import PhantomConfig, generate_patient
from ctmodels.imaging.window import LUNG, apply_window
from ctmodels.preprocess import LANDMARK_LUNG, LANDMARK_SOFT, Preprocessing, landmarks, masks_input, prepare_slice

REAL_PRE = Preprocessing(size=64, roi_crop=True, roi_mode="bilateral", roi_pad=0.05, lung_mask_input=True,
                         mask_8bit=False, intensity="landmarks", orient=True, min_lung_share=0.5)
CFG = PhantomConfig(size=128, n_slices=12, pixel_mm=2.8, slice_mm=20.0)


@pytest.fixture(scope="module")
def phantom():
    p = generate_patient("PHR", 30.0, seed=5, cfg=CFG)
    vol = p.to_volume()
    return vol, segment_lungs(vol)


def _mid(vol, lung) -> int:
    return int(np.argmax(lung.sum(axis=(1, 2))))


def test_8bit_field_finds_both_lungs_of_a_windowed_slice(phantom):
    vol, lung = phantom
    i = _mid(vol, lung)
    img8 = np.rint(apply_window(vol.array[i], LUNG) * 255)
    field = estimate_lung_field(img8)
    aerated = lung[i] & (vol.array[i] < -500)  # dense lesions are as bright as the wall: not in an 8-bit field
    assert (field & aerated).sum() / aerated.sum() > 0.85 and (field & lung[i]).sum() / field.sum() > 0.8
    half = field.shape[1] // 2
    assert field[:, :half].sum() > 0.3 * field[:, half:].sum() and field[:, half:].sum() > 0.3 * field[:, :half].sum()
    assert not estimate_lung_field(np.full((64, 64), 120.0)).any()  # a flat image has no lungs


def test_lung_field_dispatches_on_hu(phantom):
    vol, lung = phantom
    assert (lung_field(vol) == lung).all()
    img8 = Volume(np.rint(apply_window(vol.array, LUNG) * 255).astype(np.float32), is_hu=False)
    assert lung_field(img8).shape == vol.shape


def test_hu_and_its_8bit_rendering_reach_the_network_alike(phantom):
    """A HU slice, and the same slice stored as 8-bit with another window, give nearly the same input."""
    vol, lung = phantom
    i = _mid(vol, lung)
    hu = vol.array[i]
    x_hu, _ = prepare_slice(hu, True, REAL_PRE, lung[i], mask=False)
    wide = np.clip((hu + 1024.0) / 2900.0, 0, 1) * 255  # a COVID-19-CT-Seg-like window: lung near grey 16
    x_8, _ = prepare_slice(wide, False, REAL_PRE, lung[i], mask=False)
    assert np.abs(x_hu - x_8).mean() < 0.03
    lung_i, soft = landmarks(apply_window(hu, LUNG), lung[i])
    assert abs(lung_i - LANDMARK_LUNG) < 0.08 and abs(soft - LANDMARK_SOFT) < 0.12


def test_rotated_slice_is_turned_so_lungs_lie_side_by_side(phantom):
    """An Inf-Net-style slice (rotated 90°) reaches the network like the upright one, up to a flip."""
    vol, lung = phantom
    i = _mid(vol, lung)
    up, tiles_up = prepare_slice(vol.array[i], True, REAL_PRE, lung[i])
    rot, tiles_rot = prepare_slice(np.rot90(vol.array[i], -1).copy(), True, REAL_PRE, np.rot90(lung[i], -1).copy())
    assert [t[2] for t in tiles_up] == [0, 0] and [t[2] for t in tiles_rot] == [1, 1]
    candidates = [rot, rot[::-1], rot[:, ::-1], rot[::-1, ::-1]]
    assert min(np.abs(up - c).mean() for c in candidates) < 0.03


def test_cam_of_a_turned_tile_lands_back_on_its_lung(phantom):
    vol, lung = phantom
    i = _mid(vol, lung)
    rot_mask = np.rot90(lung[i], -1).copy()
    _, tiles = prepare_slice(np.rot90(vol.array[i], -1).copy(), True, REAL_PRE, rot_mask)
    cam = np.zeros((64, 64), np.float32)
    cam[:, :32] = 1.0  # evidence on the first tile only
    on_slice = to_slice(cam, tiles, rot_mask.shape)
    (r0, r1, c0, c1), _, turns = tiles[0]
    assert turns == 1
    inside = on_slice[max(r0, 0):r1, max(c0, 0):c1]
    assert inside.mean() > 0.9 and on_slice.sum() == pytest.approx(inside.sum())


def test_hu_inputs_are_masked_8bit_inputs_are_not(phantom):
    """The HU segmentation is trusted to mask with; the 8-bit estimate (which drops dense lesions) is not."""
    vol, lung = phantom
    i = _mid(vol, lung)
    assert masks_input(REAL_PRE, True) and not masks_input(REAL_PRE, False)
    assert masks_input(Preprocessing(lung_mask_input=True), False)  # the phantom set masks everything
    wide = np.clip((vol.array[i] + 1024.0) / 2900.0, 0, 1) * 255
    plain, _ = prepare_slice(wide, False, REAL_PRE, lung[i])
    masked, _ = prepare_slice(wide, False, REAL_PRE, lung[i], mask=True)
    assert np.abs(plain - masked).mean() > 0.02  # the chest wall is there unmasked, gone masked


def test_real_inf_net_slice_has_a_field_and_an_oriented_input(real_data):
    path = real_data / "infnet-semiseg" / "Imgs" / "3.jpg"
    img = np.asarray(Image.open(path).convert("L"), dtype=np.float32)
    field = estimate_lung_field(img)
    assert 0.2 < field.mean() < 0.8
    x, tiles = prepare_slice(img, False, REAL_PRE, field)
    assert x.shape == (64, 64) and tiles is not None and all(t[2] == 1 for t in tiles)  # stored rotated
    vol = read_any(path)
    assert not vol.is_hu and lung_field(vol)[0].sum() == field.sum()


def test_lungs_joined_along_a_border_are_split_not_taken_for_outside_air(real_data):
    """Inf-Net slice 43: both lungs reach the left border and join there into one region spanning the image, as
    outside air does; it is full of vessels, so it is split into the two lungs (before: no field at all)."""
    img = np.asarray(Image.open(real_data / "infnet-semiseg" / "Imgs" / "43.jpg").convert("L"), dtype=np.float32)
    field = estimate_lung_field(img)
    assert 0.5 < field.mean() < 0.8
    top, bottom = field[: img.shape[0] // 2], field[img.shape[0] // 2:]  # stored rotated: one lung above the other
    assert top.mean() > 0.4 and bottom.mean() > 0.4


def test_flip_average_scores_the_mean_of_four_flips():
    import torch

    from ctmodels.preprocess import network_logits

    class Asymmetric(torch.nn.Module):  # a logit that depends on where the bright pixel is
        def forward(self, x):
            s = (x[..., :2, :2].sum((1, 2, 3)))
            return torch.stack([-s, s], 1)

    x = torch.zeros(1, 1, 4, 4)
    x[..., 0, 0] = 1.0  # top-left: seen by the un-flipped pass only
    one = network_logits(Asymmetric(), x, Preprocessing(flip_average=False))
    avg = network_logits(Asymmetric(), x, Preprocessing(flip_average=True))
    assert one[0, 1].item() == 1.0 and avg[0, 1].item() == 0.25
    card_pre = Preprocessing.from_card(type("Card", (), {**Preprocessing(flip_average=True).card_fields()})())
    assert card_pre.flip_average  # the card carries it to the Compare page


def _chest(lung_greys: list[tuple[float, float]], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A [0, 1] slice: two lung discs in soft tissue (0.9); each (grey, share) fills that share of the lungs."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:128, :128]
    field = ((yy - 64) ** 2 + (xx - 36) ** 2 < 24 ** 2) | ((yy - 64) ** 2 + (xx - 92) ** 2 < 24 ** 2)
    img = np.full((128, 128), 0.9, np.float32)
    inside = rng.permutation(np.flatnonzero(field))
    start = 0
    for grey, share in lung_greys:
        n = int(round(share * inside.size))
        img.flat[inside[start:start + n]] = grey
        start += n
    return np.clip(img + rng.normal(0, 0.02, img.shape), 0, 1).astype(np.float32), field


def test_aerated_lung_is_the_darkest_clear_peak_not_the_commonest_grey():
    """Ground glass filling most of a lung is its most common grey; read as aerated lung it would show the network a
    diseased lung as a clear one. What aerated lung is left is the landmark, and a small lesion changes nothing."""
    diffuse, field = _chest([(0.2, 0.3), (0.6, 0.7)])
    assert abs(landmarks(diffuse, field)[0] - 0.2) < 0.02
    spotted, field = _chest([(0.2, 0.95), (0.6, 0.05)])
    assert abs(landmarks(spotted, field)[0] - 0.2) < 0.02
    faint, field = _chest([(0.2, 0.04), (0.6, 0.96)])  # a trace of dark pixels is no peak: the commonest grey stays
    assert abs(landmarks(faint, field)[0] - 0.6) < 0.02
