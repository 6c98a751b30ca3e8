"""ONNX export parity for every model key, int8 quantisation, and the measurement engine."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ctmodels.checkpoint import ModelCard, save
from ctmodels.efficiency import Measurement, inference_ready, latest, measure, save_latest, static_stats
from ctmodels.export import OrtPredictor, export_onnx, parity, quantize_int8
from ctmodels.inference import load_model
from ctmodels.nets import MODEL_KEYS, create


@pytest.mark.parametrize("key", [k for k in MODEL_KEYS if k != "pruned"] + ["pruned"])
def test_onnx_parity_for_every_key(tmp_path, key):
    torch.manual_seed(0)
    if key == "pruned":
        import torch_pruning as tp

        model = create("baseline").eval()
        tp.pruner.MetaPruner(model, torch.zeros(1, 1, 32, 32), tp.importance.MagnitudeImportance(p=1),
                             pruning_ratio=0.4, ignored_layers=[model.fc]).step()
    else:
        model = create(key).eval()
    path = export_onnx(model, tmp_path / f"{key}.onnx", size=32)
    x = np.random.default_rng(0).standard_normal((6, 1, 32, 32)).astype(np.float32)
    par = parity(model, OrtPredictor(path, threads=1), x)
    assert par.max_abs_logit_diff < 1e-3 and par.agreement == 1.0
    x224 = np.random.default_rng(1).standard_normal((1, 1, 64, 64)).astype(np.float32)
    assert OrtPredictor(path, threads=1)(x224).shape == (1, 2)  # dynamic height/width


def test_int8_quantisation_runs_and_agrees(tmp_path):
    torch.manual_seed(0)
    model = create("kd").eval()
    fp32 = export_onnx(model, tmp_path / "kd.onnx", size=32)
    calib = np.random.default_rng(0).standard_normal((8, 1, 32, 32)).astype(np.float32)
    q8 = quantize_int8(fp32, tmp_path / "kd.int8.onnx", calib)
    assert q8.stat().st_size < 0.4 * fp32.stat().st_size
    out = OrtPredictor(q8, threads=1)(calib)
    assert out.shape == (8, 2) and np.isfinite(out).all()


def _two_tiny_models(tmp_path):
    for key in ("baseline", "kd"):
        torch.manual_seed(0)
        save(create(key), ModelCard(model_key=key, input_size=32), tmp_path / key)
    return [load_model(tmp_path / k) for k in ("baseline", "kd")]


def test_the_engine_measures_two_models(tmp_path):
    lms = _two_tiny_models(tmp_path)
    calls = []
    seen = []
    calib = lambda lm: (calls.append(lm.name), np.random.default_rng(0).standard_normal((4, 1, 32, 32)).astype(np.float32))[1]  # noqa: E731
    m = measure(lms, ["eager_cpu", "ort_fp32", "ort_int8"], size=32, batches=(1, 2), repeats=3, calibration=calib,
                progress=lambda f, t: seen.append(f), artifacts=tmp_path / "onnx", source="test")
    assert isinstance(m, Measurement) and not m.errors and m.source == "test"
    assert {(t.model, t.runtime, t.batch) for t in m.timings} == {
        (n, rt, b) for n in ("baseline", "kd") for rt in ("eager_cpu", "ort_fp32", "ort_int8") for b in (1, 2)}
    for t in m.timings:
        assert t.n == 3 and 0 < t.p50_ms <= t.p90_ms and t.images_per_s > 0
    assert m.ratio("baseline", "eager_cpu") == 1.0 and 0 < m.ratio("kd", "ort_int8") < 50
    assert m.statics["kd"].params < m.statics["baseline"].params and m.statics["kd"].onnx_int8_mb > 0
    assert sorted(calls) == ["baseline", "kd"]  # calibrated once per checkpoint ...
    assert seen == sorted(seen) and seen[-1] == 1.0
    assert set(m.settings) == {"eager_cpu", "ort_fp32", "ort_int8"} and "spinning on" in m.settings["ort_fp32"]
    again = measure(lms[1:], ["ort_int8"], size=32, repeats=1, calibration=calib, artifacts=tmp_path / "onnx")
    assert not again.errors and sorted(calls) == ["baseline", "kd"]  # ... and the int8 file is reused
    # the latest measurement survives a round trip (the Efficiency page opens with it)
    assert latest(tmp_path / "cache") is None
    save_latest(m, tmp_path / "cache")
    back = latest(tmp_path / "cache")
    assert back == m and back.ratio("kd", "eager_cpu") == m.ratio("kd", "eager_cpu")


def test_a_runtime_that_fails_is_reported_and_the_rest_still_run(tmp_path):
    lms = _two_tiny_models(tmp_path)
    m = measure(lms, ["eager_cpu", "ort_int8"], size=32, repeats=2, calibration=None, artifacts=tmp_path / "onnx")
    assert len(m.errors) == 2 and all("calibration" in e for e in m.errors)  # int8 without slices
    assert {t.runtime for t in m.timings} == {"eager_cpu"}


def test_inference_ready_copy_folds_bn_and_keeps_the_outputs():
    torch.manual_seed(0)
    for key in ("baseline", "ghost"):
        model = create(key).eval()
        with torch.no_grad():  # non-trivial BN statistics, as after training
            for mod in model.modules():
                if isinstance(mod, torch.nn.BatchNorm2d):
                    mod.running_var.uniform_(0.5, 2.0)
                    mod.running_mean.uniform_(-0.1, 0.1)
        ready = inference_ready(model)
        assert not any(isinstance(x, torch.nn.BatchNorm2d) for x in ready.modules())
        assert any(isinstance(x, torch.nn.BatchNorm2d) for x in model.modules())  # the app's model is untouched
        x = torch.randn(2, 1, 64, 64)
        with torch.no_grad():
            assert torch.allclose(ready(x.contiguous(memory_format=torch.channels_last)), model(x), atol=1e-3)


def test_static_stats(tmp_path):
    lms = _two_tiny_models(tmp_path)
    st = static_stats(lms[1], size=64)
    assert 0.99 * st.params <= st.nonzero_params <= st.params and st.macs > 0 and st.size_mb > 40
