"""Jobs outlive the app: kill -9 the process that served the Training page while its run trains; a new
app process shows the run running, then finished."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.builders import wait_until
from tests.ui.apptest import open_page
from training.jobs.registry import RunStore

REPO = Path(__file__).resolve().parents[2]

SUBMIT = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {repo!r})
    from tests.ui.apptest import open_page
    at = open_page("views/training.py")
    at.selectbox(key="tr_preset").select("Custom").run()
    at.selectbox(key="tr_model_Custom").select("kd")
    at.number_input(key="tr_epochs_Custom").set_value(8)
    at.number_input(key="tr_batch_Custom").set_value(4)
    at.number_input(key="tr_size_Custom").set_value(32)
    at.toggle(key="tr_aug_Custom").set_value(False)
    at.button(key="FormSubmitter:tr_form-Start run").click().run()
    print("submitted", flush=True)
    time.sleep(600)
""")


@pytest.mark.slow  # a process-level test (issue 'One assessment path': fast or slow); `make test-all` runs it
def test_job_survives_the_app_process(workspace):
    env = {**os.environ, "CTSS_WORKSPACE": str(workspace), "PYTHONPATH": str(REPO), "CTSS_THREADS": "1"}
    app = subprocess.Popen([sys.executable, "-c", SUBMIT.format(repo=str(REPO))], cwd=REPO, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    store = RunStore(workspace)
    try:
        try:
            run = wait_until(lambda: store.list(status="running"), 120, "the submitted run to be running",
                             interval=0.3)[0]
        except AssertionError as exc:
            said = app.stdout.read() if app.poll() is not None else "no run started"
            raise AssertionError(f"{exc}: {said}") from None
        app.send_signal(signal.SIGKILL)  # the app dies mid-run
        app.wait(10)
    finally:
        if app.poll() is None:
            app.kill()
    at = open_page("views/training.py")  # a new app process (this one) looks at the registry
    table = next(d.value for d in at.dataframe if "run" in d.value.columns)
    assert table.iloc[0]["status"] in ("running", "completed")
    wait_until(lambda: store.get(run.id).status != "running", 300, "the run to end", interval=1)
    assert store.get(run.id).status == "completed", store.get(run.id).error
    at.run()
    table = next(d.value for d in at.dataframe if "run" in d.value.columns)
    assert table.iloc[0]["status"] == "completed"
