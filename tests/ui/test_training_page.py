"""Training page (AppTest + real processes): start a tiny run and watch it finish; cancel and resume;
a crashed run is shown failed with its log tail."""

from __future__ import annotations

import shutil

import pytest

from tests.builders import wait_until
from tests.ui.apptest import open_page, texts
from training.jobs.registry import RunStore

PAGE = "views/training.py"


def _fill_tiny(at, epochs: int = 2, model: str = "kd"):
    at.selectbox(key="tr_preset").select("Custom").run()
    at.selectbox(key="tr_model_Custom").select(model)
    at.number_input(key="tr_epochs_Custom").set_value(epochs)
    at.number_input(key="tr_batch_Custom").set_value(8)
    at.number_input(key="tr_size_Custom").set_value(32)
    at.toggle(key="tr_aug_Custom").set_value(False)
    at.text_input(key="tr_name_Custom").input("tiny")
    return at


def _submit(at):
    at.button(key="FormSubmitter:tr_form-Start run").click().run()
    assert not at.exception, at.exception
    return at


def _wait_status(store: RunStore, run_id: str, statuses: set[str], timeout: float = 240) -> str:
    def reached() -> str | None:
        s = store.get(run_id).status
        return s if s in statuses else None

    try:
        return wait_until(reached, timeout, f"run {run_id} to reach {sorted(statuses)}", interval=0.5)
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {store.get(run_id)}") from None


def _first_epoch(store: RunStore, run_id: str) -> None:
    wait_until(lambda: len(store.get(run_id).metrics()) >= 1, 240, f"run {run_id}'s first finished epoch",
               interval=0.5)


@pytest.fixture()
def page(workspace, monkeypatch):
    monkeypatch.setenv("CTSS_THREADS", "1")
    return open_page(PAGE)


def test_start_a_run_and_watch_it_finish(page, workspace):
    at = _submit(_fill_tiny(page))
    assert "Queued" in texts(at)
    store = RunStore(workspace)
    run = store.list()[0]
    seen_progress = False

    def ended() -> bool:
        nonlocal seen_progress
        at.run()
        body = texts(at)
        seen_progress |= "epoch" in body and ("img/s" in body or "Starting" in body)
        return store.get(run.id).status in ("completed", "failed")

    wait_until(ended, 240, "the run to end (completed or failed)", interval=1)
    at.run()
    assert store.get(run.id).status == "completed", store.get(run.id).error
    assert seen_progress
    assert len(at.get("plotly_chart")) >= 2  # loss and accuracy curves
    table = next(d.value for d in at.dataframe if "run" in d.value.columns)
    assert table.iloc[0]["status"] == "completed" and table.iloc[0]["slice acc"] is not None
    assert any("level" in d.value.columns for d in at.dataframe)  # the evaluation table


@pytest.mark.slow  # a process-level test (issue 'One assessment path': fast or slow); `make test-all` runs it
def test_cancel_then_resume(page, workspace):
    at = _submit(_fill_tiny(page, epochs=6))
    store = RunStore(workspace)
    run = store.list()[0]
    _first_epoch(store, run.id)
    at.run()
    at.button(key="tr_cancel").click().run()
    assert store.get(run.id).status == "cancelled"
    done_epochs = len(store.get(run.id).metrics())
    at.run()
    at.button(key="tr_resume").click().run()
    assert _wait_status(store, run.id, {"completed", "failed"}, 300) == "completed", store.get(run.id).error
    epochs = [m["epoch"] for m in store.get(run.id).metrics()]
    assert epochs == list(range(1, 7)) and done_epochs >= 1


@pytest.mark.slow  # a process-level test (issue 'One assessment path': fast or slow); `make test-all` runs it
def test_crashed_run_is_failed_with_log_tail(page, workspace):
    at = _submit(_fill_tiny(page, epochs=30))
    store = RunStore(workspace)
    run = store.list()[0]
    _first_epoch(store, run.id)
    # the dataset disappears under a running job, and the process dies without reporting
    shutil.rmtree(workspace / "data" / "demo")
    import os
    import signal

    os.kill(store.get(run.id).pid, signal.SIGKILL)
    assert _wait_status(store, run.id, {"failed"}, 60) == "failed"
    at.run()
    assert not at.exception
    failed = store.get(run.id)
    assert "ended without reporting" in failed.error or "exited with code" in failed.error
    assert "epoch 1/30" in failed.error  # the log tail
    table = next(d.value for d in at.dataframe if "run" in d.value.columns)
    assert table.iloc[0]["status"] == "failed"
    assert [r.status for r in store.list(status="running")] == []


def test_bad_form_input_is_refused_without_a_run(page, workspace):
    at = _fill_tiny(page)
    at.selectbox(key="tr_data_Custom").select("Local folder")
    at.text_input(key="tr_folder_Custom").input("/etc")
    _submit(at)
    assert "Cannot start this run" in at.error[0].value
    assert RunStore(workspace).list() == []


def test_cross_validation_tab(page, workspace, quick_cv, monkeypatch):
    """A finished cross-validation shows its table (learned models beside the classical reference); the form
    queues a new one, and bad settings are refused without a run."""
    import training.jobs.runner as jobs
    from training.config import RunConfig

    monkeypatch.setattr(jobs, "ensure_supervisor", lambda store=None: 0)  # queue only: nothing trains here
    store = RunStore(workspace)
    done = store.create(RunConfig.from_dict({"command": "cv", "model": "cv", "cv": {"folds": 2}}), status="completed")
    shutil.copy(quick_cv / "report.json", done.dir / "report.json")
    at = page
    at.run()
    assert not at.exception, at.exception
    at.selectbox(key="cv_pick").select(done.id).run()
    table = next(d.value for d in at.dataframe if "ROC-AUC" in d.value.columns)
    assert list(table["model"])[:1] == ["baseline"] and any(m.startswith("classical") for m in table["model"])
    assert "Patient-grouped 2-fold CV" in texts(at)
    # the ranking against the involvement without the model-made masks' edge artefacts, and what it means
    assert "ρ without mask artefacts" in table.columns and "dropped from the model-made" in texts(at)
    # each fold's own ranking beside the pooled one (two folds here)
    assert len(table.iloc[0]["ρ per fold"].split(" / ")) == 2 and "that fold's own model" in texts(at)
    at.multiselect(key="cv_models").set_value([])
    at.button(key="FormSubmitter:cv_form-Start cross-validation").click().run()
    assert "Cannot start this cross-validation" in at.error[0].value
    at.multiselect(key="cv_models").set_value(["kd"])
    at.toggle(key="cv_quick").set_value(True)
    at.button(key="FormSubmitter:cv_form-Start cross-validation").click().run()
    queued = [r for r in store.list(command="cv") if r.status == "queued"]
    assert len(queued) == 1 and queued[0].config["cv"]["models"] == ["kd"] and queued[0].config["cv"]["quick"]


def test_measured_cross_validations_by_patient_and_by_source(page, workspace, monkeypatch):
    """The developers' measured cross-validations (docs/measurements) are offered by patient and by source, with
    rho, the cut's sensitivity and specificity, lesion Dice and rho per held-out source; the form queues a
    leave-one-source-out run."""
    import training.jobs.runner as jobs

    monkeypatch.setattr(jobs, "ensure_supervisor", lambda store=None: 0)
    at = page
    at.run()
    shipped = [o for o in at.selectbox(key="cv_pick").options if o.startswith("measured by the developers")]
    assert len(shipped) == 2 and any("by patient" in o for o in shipped) and any("by source" in o for o in shipped)
    at.selectbox(key="cv_pick").select(next(o for o in shipped if "by source" in o)).run()
    assert not at.exception, at.exception
    assert "Leave-one-source-out (coronacases, radiopaedia, medseg)" in texts(at)
    table = next(d.value for d in at.dataframe if "Spearman ρ" in d.value.columns)
    for column in ("sensitivity", "specificity", "lesion Dice", "ρ coronacases", "ρ radiopaedia", "ρ medseg"):
        assert column in table.columns
    assert table["Spearman ρ"].notna().all()
    # leaving a source out, the folds are the per-source columns: no "ρ per fold" even where the report has one
    from ui.training_view import cv_table, measured_cv_reports

    report = measured_cv_reports()["sources"]
    report["rows"]["baseline"]["fold_spearman"] = {"values": [0.8, 0.7, 0.9], "text": "0.80 / 0.70 / 0.90"}
    assert "ρ per fold" not in cv_table(report).columns
    assert cv_table({**report, "split": "patients"})["ρ per fold"].iloc[0] == "0.80 / 0.70 / 0.90"
    at.selectbox(key="cv_split").select("sources")
    at.multiselect(key="cv_models").set_value(["kd"])
    at.toggle(key="cv_quick").set_value(True)
    at.button(key="FormSubmitter:cv_form-Start cross-validation").click().run()
    queued = [r for r in RunStore(workspace).list(command="cv") if r.status == "queued"]
    assert len(queued) == 1 and queued[0].config["cv"]["split"] == "sources"
