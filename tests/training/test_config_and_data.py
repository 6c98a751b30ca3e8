"""Configs round-trip and refuse nonsense; data is split by patient, stratified, labelled per slice."""

from __future__ import annotations

import numpy as np
import pytest

from training.config import AugmentConfig, ConfigError, DataConfig, RunConfig
from training.data.prepare import DataError, SliceDataset, class_weights, prepare, split_patients


def test_round_trip_json_and_yaml(tmp_path):
    cfg = RunConfig(model="ghost", model_kwargs={"ratio": 4}, notes="x")
    p = tmp_path / "c.json"
    cfg.save(p)
    assert RunConfig.load(p) == cfg
    y = tmp_path / "c.yaml"
    y.write_text("model: kd\noptim:\n  epochs: 3\n  optimizer: rmsprop\n")
    got = RunConfig.load(y)
    assert got.model == "kd" and got.optim.epochs == 3 and got.optim.optimizer == "rmsprop"


@pytest.mark.parametrize(
    "change, words",
    [
        ({"model": "resnet999"}, "unknown model key"),
        ({"optim": {"optimizer": "lion"}}, "unknown optimiser"),
        ({"optim": {"batch_size": 1}}, "batch size"),
        ({"optim": {"ema": 1.0}}, "moving average"),
        ({"data": {"split": [0.5, 0.5, 0.5]}}, "split"),
        ({"command": "distill"}, "teacher"),
        ({"command": "distill", "distill": {"teacher": "t", "lesion_alpha": 1.5}}, "lesion_alpha"),
        ({"command": "prune"}, "checkpoint"),
        ({"preprocessing": {"size": 8}}, "image size"),
    ],
)
def test_bad_configs_are_refused(change, words):
    d = RunConfig().to_dict()
    for k, v in change.items():
        d[k] = {**(d[k] or {}), **v} if isinstance(v, dict) else v
    with pytest.raises(ConfigError, match=words):
        RunConfig.from_dict(d).validate()


def test_unknown_settings_are_refused(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("optim:\n  epoch: 3\n")
    with pytest.raises(ConfigError, match="unknown setting"):
        RunConfig.load(p)


def test_patient_split_is_stratified_and_disjoint():
    labels = {f"P{i}": i % 2 for i in range(20)}
    parts = split_patients(labels, [0.5, 0.2, 0.3], seed=1)
    for part in (0, 1, 2):
        members = [p for p, s in parts.items() if s == part]
        assert sum(labels[p] for p in members) * 2 == len(members)  # balanced
    assert split_patients(labels, [0.5, 0.2, 0.3], seed=1) == parts  # seeded


def test_prepare_demo(workspace, tiny):
    cfg = tiny()
    data = prepare(cfg.data, cfg.pre, seed=0)
    assert data.images.dtype == np.uint8 and data.images.shape[1:] == (32, 32)
    assert data.synthetic and set(np.unique(data.labels)) <= {0, 1}
    for p in np.unique(data.patients):
        assert len(set(data.split[data.patients == p])) == 1  # a patient never straddles splits
    assert (data.split >= 0).all() and {0, 1, 2} <= set(data.split.tolist())
    again = prepare(cfg.data, cfg.pre, seed=0)  # from the cache
    assert np.array_equal(again.images, data.images) and again.fingerprint == data.fingerprint
    ds = SliceDataset(data, data.subset(0), cfg.pre, AugmentConfig())
    x, y, target, lesion, known = ds[0]
    assert x.shape == (1, 32, 32) and y in (0, 1) and float(target) == float(y)  # label target: the label itself
    assert known and lesion.shape == x.shape and 0 <= float(lesion.min()) and float(lesion.max()) <= 1  # phantom masks
    assert data.lesions.shape == data.images.shape == data.fields.shape and data.has_lesion.all()
    assert data.areas.shape == data.images.shape and (data.areas.astype(np.float32) > 0).any()
    w = class_weights(data.labels[data.subset(0)])
    assert np.isclose(w[data.labels[data.subset(0)] == 0].sum(), w[data.labels[data.subset(0)] == 1].sum())


def test_augmentation_moves_the_lesion_map_with_the_image(workspace, tiny):
    """A flip (or any geometric change) must move the infection mask exactly as it moves the image, while
    intensity changes (window, gamma, noise, blur) touch the image only."""
    import torch

    from ctmodels.preprocess import normalize

    cfg = tiny()
    data = prepare(cfg.data, cfg.pre, seed=0)
    j = int(np.argmax(data.lesions.reshape(len(data.lesions), -1).sum(1)))
    img = torch.from_numpy(data.images[j]).float()[None] / 255
    les = torch.from_numpy(data.lesions[j]).float()[None] / 255
    assert not torch.equal(les, les.flip(-1))  # an asymmetric lesion, so a flip shows
    flips_only = AugmentConfig(rotation_deg=0, zoom=0, translate=0, brightness=0, contrast=0, hflip=True, vflip=False)
    ds = SliceDataset(data, np.array([j]), cfg.pre, flips_only)
    torch.manual_seed(0)
    seen = set()
    for _ in range(12):
        x, _, _, lesion, _ = ds[0]
        flipped = torch.allclose(lesion, les.flip(-1))
        assert flipped or torch.allclose(lesion, les)
        assert torch.allclose(x, normalize(img.flip(-1) if flipped else img, cfg.pre), atol=1e-5)
        seen.add(flipped)
    assert seen == {True, False}
    looks = AugmentConfig(rotation_deg=0, zoom=0, translate=0, hflip=False, gamma=0.3, noise=0.05, blur=1.0, lowres=1.0)
    x, _, _, lesion, _ = SliceDataset(data, np.array([j]), cfg.pre, looks)[0]
    assert torch.equal(lesion, les) and not torch.allclose(x, normalize(img, cfg.pre), atol=1e-3)


def test_data_errors(workspace, tiny, tmp_path):
    cfg = tiny()
    with pytest.raises(DataError, match="not found"):
        prepare(DataConfig(source=str(tmp_path / "nope")), cfg.pre, 0)
    with pytest.raises(DataError, match="only one class"):
        prepare(DataConfig(source="demo", threshold_pct=99.0, max_slices_per_case=2), cfg.pre, 0)
    with pytest.raises(DataError, match="split is empty"):
        prepare(DataConfig(source="demo", split=[0.98, 0.01, 0.01], max_slices_per_case=2), cfg.pre, 0)
