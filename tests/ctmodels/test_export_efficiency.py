"""ONNX export parity for every model key, int8 quantisation, timing and static statistics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ctmodels.checkpoint import ModelCard, save
from ctmodels.efficiency import ResultCache, interleaved, make_runner, static_stats
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


def test_timing_and_stats(tmp_path):
    for key in ("baseline", "kd"):
        save(create(key), ModelCard(model_key=key, input_size=32), tmp_path / key)
    lms = [load_model(tmp_path / k) for k in ("baseline", "kd")]
    st = static_stats(lms[1], size=64)
    assert 0.99 * st.params <= st.nonzero_params <= st.params and st.macs > 0 and st.size_mb > 40
    runners = {(lm.name, "eager_cpu"): make_runner(lm, "eager_cpu", tmp_path / "onnx", None, 1) for lm in lms}
    res = interleaved(runners, size=32, batch=1, warmup=1, repeats=3)
    t = res[("kd", "eager_cpu")]
    assert t.n == 3 and 0 < t.p50_ms <= t.p90_ms and t.images_per_s > 0
    cache = ResultCache(tmp_path / "cache")
    cache.put(lms[1].ckpt_id, t)
    assert cache.get(lms[1].ckpt_id, "eager_cpu", 32, 1) == t
