"""Metrics, calibration, KD loss, sparsity schedule, stage ratios and the run registry."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ctmodels.nets import create
from training.config import PruneConfig, RunConfig
from training.engine.losses import Batch, kd_loss, lesion_loss
from training.engine.prune import MagnitudeMasks, stage_ratios
from training.evaluation.evaluate import (
    auc,
    binary_metrics,
    expected_calibration_error,
    fit_temperature,
    patient_scores,
)
from training.jobs.registry import RunStore


def test_binary_metrics_by_hand():
    p = np.array([0.9, 0.8, 0.3, 0.2, 0.6, 0.1])
    y = np.array([1, 1, 1, 0, 0, 0])
    m = binary_metrics(p, y)
    assert m["confusion"] == {"tp": 2, "tn": 2, "fp": 1, "fn": 1}
    assert m["accuracy"] == pytest.approx(4 / 6) and m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 3) and m["specificity"] == pytest.approx(2 / 3)
    assert m["roc_auc"] == pytest.approx(8 / 9)
    assert expected_calibration_error(np.array([1.0, 0.0]), np.array([1, 0])) == 0.0
    assert auc([1, 0, 1], [0.9, 0.1, 0.2]) == pytest.approx(1.0)  # lists, as the COVID-CT-MD evaluation passes
    assert auc(np.array([0, 0]), np.array([0.3, 0.7])) is None and binary_metrics(p[:1], y[:1])["roc_auc"] is None


def test_temperature_scaling_softens_overconfidence():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    logits = np.stack([np.zeros(400), (2 * y - 1) * 8.0 + rng.normal(0, 8, 400)], 1)  # overconfident
    assert fit_temperature(logits, y) > 1.5


def test_patient_score_is_lung_weighted():
    s = patient_scores(np.array([1.0, 0.0]), np.array(["a", "a"]), np.array([3.0, 1.0]))
    assert s["a"] == pytest.approx(0.75)


def test_kd_loss_matches_formula():
    torch.manual_seed(0)
    teacher = torch.nn.Linear(4, 2)
    x, y = torch.randn(5, 4), torch.tensor([0, 1, 1, 0, 1])
    s = torch.randn(5, 2)
    T, a = 4.0, 0.3
    got = kd_loss(teacher, T, a)(s, None, Batch(x, y))
    t = teacher(x).detach()
    want = a * F.cross_entropy(s, y) + (1 - a) * T * T * F.kl_div(
        F.log_softmax(s / T, 1), F.softmax(t / T, 1), reduction="batchmean")
    assert torch.allclose(got, want)


def test_polynomial_decay_schedule_and_masks():
    model = create("kd")
    masks = MagnitudeMasks(model, 0.5, total_steps=100, power=3.0)
    assert masks.target(0) == 0.0 and masks.target(100) == pytest.approx(0.5) and masks.target(200) == 0.5
    assert masks.target(50) == pytest.approx(0.5 * (1 - 0.5**3))
    masks.update(0.5)
    assert masks.sparsity() == pytest.approx(0.5, abs=0.01)
    assert "conv1" not in masks.params and "fc" not in masks.params  # input conv and classifier stay dense
    assert int((model.fc.weight == 0).sum()) == 0 and int((model.conv1.weight == 0).sum()) == 0


def test_stage_ratios_follow_sensitivity():
    r = stage_ratios({"layer1": 0.5, "layer2": 0.1, "layer3": 0.0, "layer4": 0.2},
                     PruneConfig(target_ratio=0.5, min_ratio=0.3))
    assert r["layer1"] == pytest.approx(0.3) and r["layer3"] == pytest.approx(0.5)
    assert r["layer3"] > r["layer4"] > r["layer1"]


def test_run_store(tmp_path):
    store = RunStore(tmp_path)
    run = store.create(RunConfig(model="kd", name="n1"))
    assert run.status == "queued" and (run.dir / "config.json").is_file()
    store.update(run.id, status="running", pid=123)
    assert store.find(run.id[:20]).pid == 123
    with pytest.raises(ValueError):
        store.update(run.id, status="exploded")
    assert [r.id for r in store.list(status="running")] == [run.id]
    store.delete(run.id)
    assert store.list() == [] and not run.dir.exists()


def test_lesion_loss_counts_only_slices_with_masks():
    z = torch.zeros(3, 1, 8, 8)
    mask = torch.zeros(3, 1, 8, 8)
    mask[0, 0, :4] = 1
    none = Batch(torch.zeros(3, 1, 8, 8), torch.zeros(3), mask, torch.tensor([False, False, False]))
    assert float(lesion_loss(z, none)) == 0.0
    one = Batch(none.x, none.target, mask, torch.tensor([True, False, False]))
    two = Batch(none.x, none.target, mask, torch.tensor([True, True, False]))
    assert float(lesion_loss(z, one)) != pytest.approx(float(lesion_loss(z, two)))  # slice 2 (no lesion) counts
    better = torch.full((3, 1, 8, 8), -6.0)
    better[0, 0, :4] = 6.0
    assert float(lesion_loss(better, one)) < 0.1 < float(lesion_loss(z, one))


def test_kd_loss_distils_the_teacher_lesion_map():
    from ctmodels.nets import create

    torch.manual_seed(0)
    teacher = create("kd", lesion_head=8).eval()
    x = torch.randn(4, 1, 32, 32)
    with torch.no_grad():
        t_logits, t_lesion = teacher.forward_both(x)
    batch = Batch(x, torch.tensor([0.1, 0.9, 0.2, 0.7]), torch.zeros(4, 1, 32, 32), torch.zeros(4, dtype=torch.bool))
    loss = kd_loss(teacher, 4.0, 0.5)
    assert float(loss(t_logits, t_lesion, batch)) < float(loss(t_logits, -t_lesion, batch))  # copying the map pays
    masks_only = kd_loss(teacher, 4.0, 0.5, lesion_alpha=1.0)  # the map learns from the masks alone
    copied, flipped = masks_only(t_logits, t_lesion, batch), masks_only(t_logits, -t_lesion, batch)
    assert float(copied) == pytest.approx(float(flipped))


def test_lesion_bias_matches_the_mask_area_and_cut_needs_both_classes():
    from ctmodels.preprocess import shift_lesion
    from training.evaluation.evaluate import choose_cut, lesion_bias

    rng = np.random.default_rng(0)
    truth = (rng.random((20, 16, 16)) < 0.1).astype(np.float32)
    under = np.where(truth > 0, 0.35, 0.02).astype(np.float32)  # under-segmented map
    b = lesion_bias(under, truth)
    assert b > 0 and shift_lesion(under, b).sum() == pytest.approx(truth.sum(), rel=0.01)
    assert lesion_bias(under, np.zeros_like(truth)) == 0.0
    p = np.array([0.1, 0.2, 0.3, 0.6, 0.7, 0.35, 0.8, 0.9, 0.15, 0.05, 0.65, 0.75])
    y = np.array([0, 0, 0, 1, 1, 1, 1, 1, 0, 0, 1, 0])
    cut, how = choose_cut(p, y)
    assert 0.3 < cut <= 0.35 and how["sensitivity"] == 1.0 and how["specificity"] == pytest.approx(5 / 6)
    cut, how = choose_cut(p[:4], y[:4])  # one severe slice: no fit, P = 0.5
    assert cut == 0.5 and "cut left at 0.5" in how["note"]


def test_the_map_is_drawn_at_the_cut_that_outlines_the_masks():
    """A soft map whose probabilities sum to the lesion's area marks too little at 0.5 (its edge is a halo):
    the cut chosen on validation masks lies lower, and the drawn map marks lesion at 0.5 exactly there."""
    from ctmodels.preprocess import drawn_map
    from training.evaluation.evaluate import fit_map_cut

    yy, xx = np.mgrid[:32, :32]
    r = np.hypot(yy - 16, xx - 16)
    truth = np.stack([(r < k).astype(np.float32) for k in (4, 8, 12)])
    soft = np.stack([1 / (1 + np.exp((r - k) / 1.5)) * 0.8 for k in (4, 8, 12)]).astype(np.float32)  # peaks at 0.8
    how = fit_map_cut(soft, truth, np.ones_like(soft))
    assert how["cut"] < 0.5 and how["validation_dice"] > how["validation_dice_at_0.5"]
    drawn = drawn_map(soft, how["cut"])
    assert drawn.dtype == np.float32 and 0 <= drawn.min() and drawn.max() <= 1
    clear = np.abs(soft - how["cut"]) > 1e-4  # the same pixels (those on the cut itself go either way in float32)
    assert np.array_equal((drawn >= 0.5)[clear], (soft >= how["cut"])[clear])
    assert np.array_equal(drawn_map(soft, 0.5), soft)  # a card without a map cut: drawn as scored
    assert fit_map_cut(soft, np.zeros_like(truth), np.ones_like(soft)) == {}


def test_operating_point_is_a_learned_involvement_that_separates_the_classes():
    from training.evaluation.evaluate import involvement_operating_point

    learned = np.array([1, 2, 3, 4, 6, 7, 8, 12, 13, 15, 16, 30], float)  # under-covered: severe from ~10 %
    y = np.array([0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1])
    op, how = involvement_operating_point(learned, y, 25.0)
    assert 8 < op < 12 and how["sensitivity"] == 1.0 and how["specificity"] == 1.0
    op, how = involvement_operating_point(learned[:9], y[:9], 25.0)  # two severe: too few, the threshold stays
    assert op == pytest.approx(25.0) and "note" in how


def test_the_operating_point_is_fitted_on_every_slice_not_read_off_the_roc_s_peak():
    from training.evaluation.evaluate import balanced_logistic_cut, choose_cut, involvement_operating_point

    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(400, int), np.ones(20, int)]  # few severe slices, as in a fold
    z = np.r_[rng.normal(-3.0, 1.0, 400), rng.normal(0.0, 1.0, 20)]
    cut = balanced_logistic_cut(z, y)
    assert -2.0 < cut < -1.0  # about halfway between the classes (equal spreads: -1.5): the classes weigh the same
    assert balanced_logistic_cut(-z, y) is None  # a score that falls with severity has no such point
    falling = 100 / (1 + np.exp(z - np.log(25 / 75)))  # the learned area shrinking with severity: J's peak, as before
    op, how = involvement_operating_point(falling, y, 25.0)
    assert how == choose_cut(1 / (1 + np.exp(z)), y)[1]


def test_source_balance_gives_a_small_source_its_share_of_draws():
    from types import SimpleNamespace

    from training.data.prepare import sample_weights

    patients = np.array(["coronacases_001"] * 80 + ["radiopaedia-4"] * 16 + [f"slice-{i}" for i in range(4)])
    data = SimpleNamespace(involvement=np.full(100, 3.0, np.float32), labels=np.zeros(100, int), patients=patients)
    idx = np.arange(100)
    share = lambda w: w[80 + 16:].sum() / w.sum()  # noqa: E731 - the four MedSeg slices' share of the draws
    assert np.isclose(share(sample_weights(data, idx, "involvement")), 0.04)  # off: as many draws as slices
    half = sample_weights(data, idx, "involvement", source_balance=0.5)
    assert np.isclose(share(half), 2 / (np.sqrt(80) + 4 + 2))  # each source's share goes as the root of its size
    full = sample_weights(data, idx, "involvement", source_balance=1.0)
    assert np.isclose(share(full), 1 / 3)
    one = sample_weights(data, idx[:80], "involvement", 0.5)  # one source: the draws do not change
    off = sample_weights(data, idx[:80], "involvement")
    assert np.allclose(one / one.sum(), off / off.sum())
