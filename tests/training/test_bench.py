"""make bench's engine on a tiny model set: every field of bench.json, ratios to the same run's baseline."""

from __future__ import annotations

import json

import pytest


@pytest.mark.slow
def test_bench_report(workspace_with_models, tmp_path):
    from training.evaluation.bench import run

    rep = run(size=32, repeats=2, sweep=(1, 2), out_dir=tmp_path)
    data = json.loads((tmp_path / "bench.json").read_text())
    assert (tmp_path / "bench.md").read_text().startswith("# Benchmark")
    assert set(data["models"]) == {"baseline", "ghost", "pruned", "kd"}
    for key, m in data["models"].items():
        for field in ("params", "nonzero_params", "size_mb", "macs", "latency_ms", "ratio_to_baseline_eager",
                      "accuracy", "onnx_parity"):
            assert field in m, (key, field)
        assert set(m["latency_ms"]) >= {"eager_cpu", "ort_fp32", "ort_int8"}
        assert set(m["accuracy"]) >= {"eager_cpu", "ort_fp32", "ort_int8"}
        assert m["onnx_parity"]["fp32_max_abs_logit_diff"] < 1e-3 and m["onnx_parity"]["fp32_agreement"] == 1.0
    assert data["models"]["baseline"]["ratio_to_baseline_eager"]["eager_cpu"] == 1.0
    assert data["app"]["p50_s"] > 0 and len(data["app"]["models"]) == 4
    assert "best_int8" in data["goals"] and rep["goals"] == data["goals"]
    assert "spinning on" in data["settings"]["ort_fp32"] and "How each runtime ran" in (tmp_path / "bench.md").read_text()
    from ctmodels.efficiency import latest

    shown = latest()  # the Efficiency page opens with it
    assert shown is not None and shown.source == "make bench" and set(shown.keys) == set(data["models"])
