"""The served runtime: ``training serve`` exports a model's scoring graph to ONNX (fp32, int8), measures its
agreement with eager PyTorch on the validation slices and records the choice; the app then scores whole scans
with it, with the same verdicts as eager within the recorded agreement; stale or damaged files fall back to
eager."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import numpy as np
import pytest

from ctmodels.imaging import read_any
from ctmodels.imaging.lung_field import lung_field
from ctmodels.assessment import assess
from ctmodels.inference import _runs, load_model, predict_volume, prepare_scan, score_side_by_side
from ctmodels.serving import MIN_AGREEMENT, ONNX_FILES, SERVED_CARD, served_dir, served_session
from tests.conftest import _workspace_env
from training.evaluation.served import serve


class _Recording:
    """An ORT session that notes, per run, whether the run hands the session's arena back afterwards."""

    def __init__(self, sess, shrinks: list[bool]) -> None:
        self.sess, self.shrinks = sess, shrinks

    def run(self, names, feeds, options=None):
        self.shrinks.append(options is not None
                            and options.get_run_config_entry("memory.enable_memory_arena_shrinkage") == "cpu:0")
        return self.sess.run(names, feeds, options)


@pytest.fixture(scope="module")
def served_once(tiny_real_models, tmp_path_factory):
    """The tiny real baseline served once (export, int8 calibration, agreement) in its own workspace."""
    root = tmp_path_factory.mktemp("served")
    (root / "workspace").mkdir()
    folder = root / "baseline"
    shutil.copytree(tiny_real_models / "baseline", folder)
    with _workspace_env(root / "workspace"):
        return folder, serve(folder)


@pytest.fixture()
def served_baseline(served_once, tmp_path):
    """A private copy of the served model (tests rewrite its served.json)."""
    folder = tmp_path / "baseline"
    shutil.copytree(served_once[0], folder)
    return folder, served_once[1]


def test_serve_records_a_choice_and_the_app_scores_with_it(served_baseline, real_data):
    folder, choice = served_baseline
    assert json.loads((served_dir(folder) / SERVED_CARD).read_text()) == choice
    assert set(choice["candidates"]) == set(ONNX_FILES) and choice["validation_slices"] > 0
    for c in choice["candidates"].values():
        assert 0.0 <= c["verdict_agreement"] <= 1.0 and c["slices_per_s"] > 0
    assert choice["candidates"]["ort_fp32"]["verdict_agreement"] >= MIN_AGREEMENT  # fp32: float noise only
    if choice["runtime"] != "eager":
        assert choice["candidates"][choice["runtime"]]["verdict_agreement"] >= MIN_AGREEMENT
    served, eager = load_model(folder), load_model(folder, served=False)
    assert served.runtime == choice["runtime"] and eager.runtime == "eager"
    # a served session lives as long as the server: its weights stay out of the arena it shrinks after each scan
    options = served_session(served_dir(folder) / ONNX_FILES["ort_fp32"]).get_session_options()
    assert options.get_session_config_entry("session.use_device_allocator_for_initializers") == "1"

    vol = read_any(real_data / "infnet-semiseg" / "Imgs" / sorted(p.name for p in (real_data / "infnet-semiseg" / "Imgs").iterdir())[0])
    lung = lung_field(vol)
    a, b = predict_volume(served, vol, lung), predict_volume(eager, vol, lung)
    assert a.slices == b.slices
    assert abs(a.patient_p - b.patient_p) <= choice["candidates"].get(served.runtime, {}).get("max_abs_p_difference", 0) + 1e-4


def test_fp32_serving_matches_eager_on_the_ctmd_series(served_baseline, real_data):
    folder, choice = served_baseline
    choice = dict(choice, runtime="ort_fp32")
    (served_dir(folder) / SERVED_CARD).write_text(json.dumps(choice))
    served, eager = load_model(folder), load_model(folder, served=False)
    assert served.runtime == "ort_fp32"
    shrinks: list[bool] = []  # per batch: whether the run hands the session's arena back afterwards
    served = replace(served, served=replace(served.served, sess=_Recording(served.served.sess, shrinks)))
    vol = read_any(real_data / "covid-ct-md" / "Sample data" / "COVID-19 subjects" / "P002")
    lung = lung_field(vol)
    a, b = predict_volume(served, vol, lung), predict_volume(eager, vol, lung)
    assert len(shrinks) > 1 and shrinks == [False] * (len(shrinks) - 1) + [True]  # buffers reused, then released
    assert a.verdict == b.verdict and abs(a.patient_p - b.patient_p) < 1e-4
    assert np.allclose(a.p_severe, b.p_severe, atol=1e-4)
    if a.involvement is not None:
        assert np.allclose(a.involvement, b.involvement, atol=1e-3)


def test_models_scored_on_every_core_score_as_alone(served_baseline, real_data):
    """A scan's served models are cut into runs of whole batches, one per core: the same scores as each model
    scored alone, and every run hands its arena back after its last batch."""
    folder, choice = served_baseline
    (served_dir(folder) / SERVED_CARD).write_text(json.dumps(dict(choice, runtime="ort_fp32")))
    shrinks: list[bool] = []
    models = []
    for name in ("one", "two"):
        lm = load_model(folder, name)
        models.append(replace(lm, served=replace(lm.served, sess=_Recording(lm.served.sess, shrinks))))
    vol = read_any(real_data / "covid-ct-md" / "Sample data" / "COVID-19 subjects" / "P002")
    lung = lung_field(vol)
    alone = [predict_volume(lm, vol, lung) for lm in models]
    shrinks.clear()
    inputs = [prepare_scan(lm, vol, lung) for lm in models]
    got = {k: s for k, s, _ in score_side_by_side(models, inputs, workers=3)}
    assert sorted(got) == [0, 1] and shrinks.count(True) == 2 * len(_runs(len(inputs[0].slices), 8, 3)) == 6
    for k, ref in enumerate(alone):
        assert np.array_equal(got[k].p_severe, ref.p_severe) and np.array_equal(got[k].lesion, ref.lesion_net)
        assert np.array_equal(got[k].involvement, ref.involvement)
    page = assess(vol, models, lung)  # the page's path: as many runs as cores
    assert [m.prediction.patient_p for m in page.models] == [a.patient_p for a in alone]
    assert [m.prediction.verdict for m in page.models] == [a.verdict for a in alone]


def test_runs_cut_at_whole_batches():
    assert _runs(88, 8, 2) == [(0, 48), (48, 88)]
    assert _runs(88, 8, 3) == [(0, 32), (32, 56), (56, 88)]
    assert _runs(5, 8, 2) == [(0, 5)]  # one batch: one run
    assert _runs(16, 8, 4) == [(0, 8), (8, 16)]
    assert _runs(0, 8, 2) == [(0, 0)]


def test_stale_or_damaged_served_files_fall_back_to_eager(served_baseline, caplog):
    folder, choice = served_baseline
    card = served_dir(folder) / SERVED_CARD
    card.write_text(json.dumps(dict(choice, runtime="ort_fp32", checkpoint_id="another-checkpoint")))
    assert load_model(folder).runtime == "eager"
    card.write_text(json.dumps(dict(choice, runtime="ort_fp32")))
    (served_dir(folder) / ONNX_FILES["ort_fp32"]).write_bytes(b"not an onnx file")
    assert load_model(folder).runtime == "eager"
    assert "scoring with eager PyTorch" in caplog.text
    card.write_text("{broken")
    assert load_model(folder).runtime == "eager"
