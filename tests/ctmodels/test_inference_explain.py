"""Inference, Grad-CAM mapping, agreement, refer reasons and the meeting export."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from ctmodels.assessment import assess
from ctmodels.explain import METHODS, agreement, mass_inside, target_layer_name
from ctmodels.imaging import Volume
from ctmodels.imaging.lung import segment_lungs
from ctmodels.imaging.phantom import PhantomConfig, generate_patient
from ctmodels.inference import load_model, patient_score, predict_volume, prepare_input, probabilities
from ctmodels.preprocess import to_slice

CFG = PhantomConfig(size=128, n_slices=12, pixel_mm=2.8, slice_mm=20.0)


@pytest.fixture(scope="module")
def severe_case():
    p = generate_patient("PHX", 55.0, seed=21, cfg=CFG)
    vol = p.to_volume()
    return p, vol, segment_lungs(vol)


@pytest.fixture(scope="module")
def models(tiny_models):
    return [load_model(tiny_models / k, k) for k in ("ghost", "pruned", "kd", "baseline")]


def test_predict_volume(models, severe_case):
    _, vol, lung = severe_case
    vp = predict_volume(models[0], vol, lung)
    assert vp.verdict in ("mild", "severe") and 0 <= vp.patient_p <= 1
    assert len(vp.slices) == len(vp.p_severe) and all(lung[i].any() for i in vp.slices)
    curve = vp.curve(vol.n_slices)
    assert len(curve) == vol.n_slices and curve[vp.slices[0]] == pytest.approx(vp.p_severe[0])
    # the app's patient verdict and the evaluated one are the same aggregation: lung-area-weighted P(severe)
    area = lung[vp.slices].sum(axis=(1, 2))
    assert vp.patient_p == pytest.approx(patient_score(vp.p_severe, area))
    from training.evaluation.evaluate import patient_scores

    assert patient_scores(vp.p_severe, np.array(["PHX"] * len(area)), area)["PHX"] == pytest.approx(vp.patient_p)


def test_a_model_without_a_lesion_head_has_no_lesion_map(models, severe_case):
    from ctmodels.inference import lesion_map

    _, vol, lung = severe_case
    assert lesion_map(models[0], vol, lung, int(np.argmax(lung.sum(axis=(1, 2))))) is None
    vp = predict_volume(models[0], vol, lung)
    assert vp.involvement is None and vp.patient_involvement is None


def test_patient_score_weights_slices_by_lung_area():
    assert patient_score(np.array([0.2, 0.8]), np.array([3, 1])) == pytest.approx(0.35)
    assert patient_score(np.array([0.2, 0.8]), np.array([0, 0])) == pytest.approx(0.5)  # no lung anywhere: plain mean
    assert patient_score(np.array([0.2, 0.8]), None) == pytest.approx(0.5)


@pytest.mark.parametrize("method", list(METHODS))
def test_every_cam_method_maps_onto_the_slice(models, severe_case, method):
    _, vol, lung = severe_case
    idx = int(np.argmax(lung.sum(axis=(1, 2))))
    comp = assess(vol, models, lung).at(idx, method=method)
    assert [r.model for r in comp.results] == ["ghost", "pruned", "kd", "baseline"]
    for r in comp.results:
        assert r.cam.shape == vol.shape[1:] and 0 <= r.cam.min() and r.cam.max() <= 1.0 + 1e-6
        assert r.cam_in_lung is not None and 0 <= r.cam_in_lung <= 1  # the slice with the most lung
        assert r.cam_layer.startswith("layer")
    assert len(comp.agreement) == 6
    # hooks are released: the model's modules carry no leftover forward hooks
    for m in models:
        assert all(not mod._forward_hooks for mod in m.model.modules())


def test_one_pass_verdict_matches_plain_inference(models, severe_case):
    """The slice verdict beside a CAM (whichever class it explains) equals a separate no-grad pass."""
    _, vol, lung = severe_case
    idx = int(np.argmax(lung.sum(axis=(1, 2))))
    assessment = assess(vol, models, lung)
    predicted = assessment.at(idx)
    asked = assessment.at(idx, explain="mild")
    for lm, r, a in zip(models, predicted.results, asked.results):
        p = float(probabilities(lm, prepare_input(lm, vol, [idx], lung).tensor)[0])
        assert r.p_severe == pytest.approx(p, abs=1e-5) and r.explained == r.verdict
        assert a.explained == "mild" and a.p_severe == pytest.approx(p, abs=1e-5)
        assert not any(w.requires_grad for w in lm.model.parameters())  # inference models are frozen


def test_flip_averaging_model_is_explained_by_its_four_flips(models, severe_case):
    """The CAM of a flip-averaging model is the mean of the four flips' CAMs turned back, for the class of
    the mean logits, and the verdict beside it is the flip-averaged P(severe)."""
    import dataclasses

    import torch

    from ctmodels.explain import cam_batch
    from ctmodels.preprocess import FLIPS

    _, vol, lung = severe_case
    idx = int(np.argmax(lung.sum(axis=(1, 2))))
    plain = models[-1]
    flipping = dataclasses.replace(plain, pre=dataclasses.replace(plain.pre, flip_average=True))
    x = prepare_input(plain, vol, [idx], lung).tensor
    maps, logits = cam_batch(flipping, x, None)
    assert torch.allclose(logits, torch.stack([plain.model(x.flip(d) if d else x) for d in FLIPS]).mean(0), atol=1e-4)
    cls = int(logits.argmax(1)[0])
    views = [cam_batch(plain, x.flip(d) if d else x, [cls])[0] for d in FLIPS]
    expected = np.mean([np.flip(v, d) if d else v for v, d in zip(views, FLIPS)], axis=0)
    assert maps.shape == expected.shape and maps.max() == pytest.approx(1.0)
    np.testing.assert_allclose(maps, expected / expected.max(), atol=1e-4)
    assert not np.allclose(maps, views[0] / max(views[0].max(), 1e-8), atol=1e-3)  # the flips do change the map
    r = assess(vol, [flipping], lung).at(idx).results[0]
    assert r.p_severe == pytest.approx(float(probabilities(flipping, x)[0]), abs=1e-5)


def test_target_layer_choice(models):
    assert target_layer_name(models[3].model, 448) == "layer4.2"
    assert target_layer_name(models[3].model, 224) == "layer3.5"
    assert target_layer_name(models[3].model, 64) == "layer1.2"  # 2x2 at layer4 is too coarse
    assert target_layer_name(models[2].model, 224) == "layer3.1"


def test_to_slice_and_mass():
    cam = np.ones((4, 4), np.float32)
    out = to_slice(cam, (10, 20, 30, 40), (64, 64))
    assert out[10:20, 30:40].min() == pytest.approx(1.0) and out.sum() == pytest.approx(100.0)
    mask = np.zeros((64, 64), bool)
    mask[10:20, 30:35] = True
    assert mass_inside(out, mask) == pytest.approx(0.5)
    a = np.random.default_rng(0).random((32, 32))
    g = agreement(a, a)
    assert g.pearson == pytest.approx(1.0) and g.top20_iou == pytest.approx(1.0)
    assert agreement(a, -a).pearson == pytest.approx(-1.0)


def test_refer_reasons(models, severe_case):
    _, vol, lung = severe_case
    flat = Volume(np.full((1, 64, 64), 100.0, np.float32), is_hu=False)
    view = assess(flat, models[:1]).at(0)
    assert any("8-bit" in r for r in view.reasons) and any("No lung field" in r for r in view.reasons)
    air = Volume(np.full((3, 64, 64), -1000.0, np.float32), is_hu=True, spacing=(5, 1, 1))
    assert any("No lungs" in r for r in assess(air, models[:1]).at(1).reasons)
    many = assess(vol, models, lung)
    view = many.at(int(np.argmax(lung.sum(axis=(1, 2)))))
    unsure = [r.model for r in view.results if abs(r.p_severe - r.cut) < 0.15]
    assert bool(unsure) == any("Low confidence" in r for r in view.reasons)


def test_export_png_shows_all_panels(models, severe_case):
    from ctmodels.explain import heatmap_overlay
    from ctmodels.imaging.window import LUNG
    from ui import export, render

    _, vol, lung = severe_case
    idx = int(np.argmax(lung.sum(axis=(1, 2))))
    comp = assess(vol, models, lung).at(idx)
    gray = render.slice_rgb(vol.slice(idx), LUNG)
    ramp = np.linspace(0.2, 1.0, gray.shape[1])[None, :] * np.ones(gray.shape[:2])  # a CAM sure to show colour
    panels = [(r.model, heatmap_overlay(gray, np.clip(0.5 * r.cam + ramp, 0, 1)), f"{r.verdict}") for r in comp.results]
    png = export.comparison_png(gray, panels, "Model comparison", "test", ["Refer: example"])
    img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    h, w, _ = img.shape
    assert w >= 5 * 300 and h >= 400
    # five image panels side by side (runs of non-white columns): the grey input, then four coloured CAMs
    mid = img[h // 3 : 2 * h // 3].astype(int)
    inked = (mid.min(axis=2) < 230).any(axis=0)
    edges = np.flatnonzero(np.diff(np.r_[0, inked.astype(int), 0]))
    runs = [(a, b) for a, b in zip(edges[::2], edges[1::2]) if b - a > 100]
    assert len(runs) == 5, runs
    colour = np.abs(mid[..., 0] - mid[..., 2]) > 60
    assert not colour[:, runs[0][0] : runs[0][1]].any()
    assert all(colour[:, a:b].sum() > 500 for a, b in runs[1:])
    assert (img[-40:] [..., 0] > 150).any()  # the red disclaimer line at the bottom


def test_the_first_look_equals_the_assessment_of_that_slice(models, severe_case):
    """Compare shows the opening slice's verdicts before the whole scan is scored: the same numbers."""
    from ctmodels.assessment import first_look, largest_lung_slice

    _, vol, lung = severe_case
    at = largest_lung_slice(vol, lung)
    first = first_look(vol, models, lung, at)
    assessment = assess(vol, models, lung)
    assert assessment.largest_lung_slice() == at
    view = assessment.at(at)
    assert [n for n, _, _ in first] == [r.model for r in view.results]
    for (_, p, verdict), r in zip(first, view.results):
        assert p == pytest.approx(r.p_severe, abs=1e-6) and verdict == r.verdict
        assert p == pytest.approx(assessment.result(r.model).prediction.curve(vol.n_slices)[at], abs=1e-5)
    # under load the page shows the slice's verdicts before their Grad-CAMs: the same view, without gradients
    quick = assessment.at(at, cams=False)
    assert quick.reasons == view.reasons and not quick.agreement and view.agreement
    for q, r in zip(quick.results, view.results):
        assert (q.model, q.p_severe, q.verdict, q.cut, q.in_scope) == (r.model, r.p_severe, r.verdict, r.cut, r.in_scope)
        assert q.cam is None and q.cam_in_lung is None and r.cam is not None and np.array_equal(q.seen, r.seen)


def test_the_assessment_is_the_same_on_the_packed_field(models, severe_case):
    """Sessions keep the lung field as bits (``ctmodels.imaging.packed``): same scores, CAMs and reasons."""
    from ctmodels.imaging.packed import PackedMask

    _, vol, lung = severe_case
    plain, packed = assess(vol, models, lung), assess(vol, models, PackedMask(lung))
    assert plain.largest_lung_slice() == packed.largest_lung_slice()
    for a, b in zip(plain.models, packed.models):
        assert np.array_equal(a.prediction.p_severe, b.prediction.p_severe) and a.prediction.verdict == b.prediction.verdict
    at = plain.largest_lung_slice()
    for a, b in zip(plain.at(at).results, packed.at(at).results):  # CAMs: equal up to a rerun's float noise (~1e-6)
        assert a.p_severe == b.p_severe and np.allclose(a.cam, b.cam, atol=1e-5)
    assert plain.at(at).reasons == packed.at(at).reasons
