"""Lesion heads and what is measured from a lesion map: the head on every kind, widths-as-data through
pruning, the network frame ↔ slice grid mapping, learned involvement in slice pixels, and verdict rules."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ctmodels.nets import create
from ctmodels.nets.lesion import LesionOutputs, has_lesion_head, lesion_outputs
from ctmodels.preprocess import Preprocessing, lesion_areas, lung_tiles, pixel_areas, to_network, to_slice
from ctmodels.verdict import VerdictRule, involvement_logit

KINDS = ("baseline", "ghost", "kd", "ghost_kd", "sparse")


@pytest.mark.parametrize("key", KINDS)
def test_every_kind_takes_a_lesion_head(key):
    model = create(key, lesion_head=16).eval()
    x = torch.randn(2, 1, 64, 64)
    logits, lesion = model.forward_both(x)
    assert logits.shape == (2, 2) and lesion.shape == (2, 1, 64, 64)
    assert torch.allclose(model(x), logits, atol=1e-5)  # the plain call is the verdict's pass, unchanged
    with lesion_outputs(model):
        both = model(x)
    assert isinstance(both, tuple) and torch.allclose(both[1], lesion, atol=1e-5)
    assert not isinstance(model(x), tuple)  # the flag is restored
    assert has_lesion_head(model) and not has_lesion_head(create(key))
    head = sum(p.numel() for p in model.lesion_head.parameters())
    assert head < 0.02 * sum(p.numel() for p in model.parameters())


def test_a_head_survives_structured_pruning_and_rebuilds_from_widths():
    from ctmodels.nets.registry import apply_widths, extract_widths
    from training.config import PruneConfig
    from training.engine.prune import StructuredPruner, count, stage_ratios

    model = create("baseline", lesion_head=16)
    macs0, params0 = count(model, 64)
    StructuredPruner(model, 64, stage_ratios({}, PruneConfig(target_ratio=0.5, sensitivity=False)), 1).step()
    macs1, params1 = count(model, 64)
    assert params1 < 0.5 * params0 and macs1 < macs0
    logits, lesion = model.forward_both(torch.randn(1, 1, 64, 64))
    assert lesion.shape == (1, 1, 64, 64)
    widths = extract_widths(model, "baseline", lesion_head=16)
    assert any(k.startswith("lesion_head.lateral") for k in widths)  # its inputs shrank with the stages
    assert not any(k.startswith("lesion_head.smooth") for k in widths)  # its own widths stayed
    rebuilt = apply_widths(create("baseline", lesion_head=16), widths)
    rebuilt.load_state_dict(model.state_dict())


def test_fx_folding_keeps_both_outputs():
    from ctmodels.efficiency import inference_ready

    model = create("ghost", lesion_head=16).eval()
    x = torch.randn(1, 1, 64, 64)
    served = inference_ready(LesionOutputs(model))
    a, b = model.forward_both(x)
    c, d = served(x.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(a, c, atol=1e-4) and torch.allclose(b, d, atol=1e-4)


def _two_lungs(h: int = 120, w: int = 100) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[20:100, 10:45] = True
    m[30:90, 55:90] = True
    return m


@pytest.mark.parametrize("orient", [False, True])
def test_network_frame_maps_back_and_keeps_areas(orient):
    lung = _two_lungs()
    if orient:
        lung = np.rot90(lung).copy()  # lungs one above the other: the tiles are turned
    pre = Preprocessing(size=64, roi_crop=True, roi_mode="bilateral", roi_pad=0.05, orient=orient)
    tiles = lung_tiles(lung, pre, lung.shape)
    assert tiles is not None and len(tiles) == 2
    net = to_network(lung, tiles, 64)
    back = to_slice(net, tiles, lung.shape) >= 0.5
    assert (back == lung).mean() > 0.98
    area = pixel_areas(tiles, 64, lung.shape)
    assert (net * area).sum() == pytest.approx(lung.sum(), rel=0.03)  # areas in slice pixels
    lesion = np.zeros_like(lung)
    lesion[np.nonzero(lung)[0][:400], np.nonzero(lung)[1][:400]] = True
    les, tot = lesion_areas(to_network(lesion, tiles, 64)[None], net[None], area[None])
    assert 100 * les[0] / tot[0] == pytest.approx(100 * lesion.sum() / lung.sum(), rel=0.1)


def test_lesion_outside_the_field_counts_as_lung():
    field = np.zeros((1, 8, 8), np.float32)
    field[0, :, :4] = 1
    lesion = np.zeros((1, 8, 8), np.float32)
    lesion[0, :, 4:6] = 1  # consolidation the 8-bit field left out
    les, lung = lesion_areas(lesion, field, np.ones_like(field))
    assert les[0] == 16 and lung[0] == 48


def test_verdict_rules():
    old = type("Card", (), {"verdict": {}, "temperature": 2.0, "label_rule": {"threshold_pct": 25.0}})()
    rule = VerdictRule.from_card(old)  # a card from before verdict rules: head, temperature, 0.5
    assert rule.score == "head" and rule.a == 0.5 and rule.cut == 0.5
    logits = np.array([[0.0, 2.0], [1.0, 0.0]])
    assert rule.p_severe(logits) == pytest.approx(1 / (1 + np.exp(-np.array([1.0, -0.5]))))
    lesion = VerdictRule("lesion", cut=0.4)
    assert involvement_logit(np.array([25.0]), 25.0)[0] == pytest.approx(0.0)
    p = lesion.p_severe(None, np.array([5.0, 25.0, 60.0]))
    assert p[1] == pytest.approx(0.5) and p[0] < 0.4 < p[2]
    assert [lesion.verdict(v) for v in p] == ["mild", "severe", "severe"]  # the card's cut, not 0.5
    with pytest.raises(ValueError, match="lesion"):
        lesion.p_severe(logits, None)
    both = VerdictRule("both")
    assert both.raw(logits, np.array([25.0, 25.0])) == pytest.approx(np.array([1.0, -0.5]))
    card = type("Card", (), {"verdict": lesion.to_dict()})()
    assert VerdictRule.from_card(card) == lesion
    at10 = VerdictRule.at_involvement(10.0, 25.0)  # a cross-validated operating point: severe from 10 % learned
    p = at10.p_severe(None, np.array([9.0, 10.0, 11.0]))
    assert p[1] == pytest.approx(0.5) and [at10.verdict(v) for v in p] == ["mild", "severe", "severe"]
    assert "10.0 %" in at10.describe() and VerdictRule.from_card(type("C", (), {"verdict": at10.to_dict()})()) == at10
