"""Efficiency page (AppTest): measure two tiny models live; charts and the Table I comparison appear; the
next visit opens with that measurement, dated, without measuring again."""

from __future__ import annotations

from tests.ui.apptest import open_page, texts


def test_measure_two_models(workspace_with_models):
    at = open_page("views/efficiency.py", timeout=600)
    assert not at.exception
    assert "Not measured yet" in texts(at) and not at.get("plotly_chart")
    at.multiselect(key="eff_models").set_value(["baseline", "kd"])
    at.multiselect(key="eff_runtimes").set_value(["eager_cpu", "ort_fp32"])
    at.select_slider(key="eff_size").set_value(64)
    at.slider(key="eff_repeats").set_value(5)
    at.multiselect(key="eff_batches").set_value([1, 2]).run()
    at.button(key="eff_measure").click().run()
    assert not at.exception, at.exception
    assert len(at.get("plotly_chart")) >= 4  # latency, sweep, size, parameters (+ Pareto)
    t1 = next(d.value for d in at.dataframe if "reported params (M)" in d.value.columns)
    assert list(t1["model"])[:1] == ["ResNet50"]
    base = t1[t1["model"] == "ResNet50"].iloc[0]
    assert base["measured params (M)"] == 23.51 and base["measured latency × baseline"] == 1.0
    kd = t1[t1["model"] == "ResNet50+ KD"].iloc[0]
    assert 0 < kd["measured latency × baseline"] < 5 and kd["reported params (M)"] == 14.5
    timings = next(d.value for d in at.dataframe if "p50_ms" in d.value.columns)
    assert set(timings["runtime"]) == {"eager_cpu", "ort_fp32"} and set(timings["batch"]) == {1, 2}
    assert (timings["p50_ms"] > 0).all()
    # the next visit opens with that measurement, dated, without pressing anything
    again = open_page("views/efficiency.py")
    assert not again.exception
    shown = texts(again)
    assert "Latest measurement on this host" in shown and "Efficiency page" in shown and "64×64 px" in shown
    assert len(again.get("plotly_chart")) >= 4
    t = next(d.value for d in again.dataframe if "p50_ms" in d.value.columns)
    assert t.equals(timings)
