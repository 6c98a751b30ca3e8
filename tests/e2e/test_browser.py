"""The running app in headless Chromium: every page opens; a DICOM zip on Compare gets every verdict and CAM;
the Data Browser scores the phantoms with the phantom set; a tiny training run starts and is cancelled; a quick efficiency measurement draws its charts. A screenshot
of each page is saved under test-artifacts/."""

from __future__ import annotations

import re
import time

import pytest

from tests.builders import zip_folder
from tests.e2e.conftest import ARTIFACTS

pytestmark = pytest.mark.e2e


def _wait_idle(page, timeout: float = 60.0) -> None:
    """Until Streamlit is not running the script (no 'Running...' status widget)."""
    page.wait_for_timeout(500)
    t0 = time.time()
    while time.time() - t0 < timeout:
        if page.locator('[data-testid="stStatusWidget"]').count() == 0:
            return
        page.wait_for_timeout(300)


def _goto(page, url: str, title: str) -> None:
    page.goto(url)
    page.get_by_role("heading", name=title).first.wait_for()
    _wait_idle(page)


def _shot(page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_every_page_in_a_real_browser(app_url, browser_page, workspace_with_models):
    page = browser_page
    _goto(page, app_url, "CT Severity Studio")
    page.get_by_text("Trained models").first.wait_for()
    _shot(page, "home")

    # Compare: upload a zipped DICOM series, wait for the four verdicts and CAMs
    _goto(page, f"{app_url}/compare", "Compare models")
    page.get_by_role("radio", name="Upload").click() if page.get_by_role("radio", name="Upload").count() else \
        page.get_by_text("Upload", exact=True).first.click()
    _wait_idle(page)
    data = zip_folder(workspace_with_models / "data" / "demo" / "dicom" / "PH0004", "*.dcm", stored=True)
    page.locator('input[type="file"]').first.set_input_files(
        files=[{"name": "series.zip", "mimeType": "application/zip", "buffer": data}])
    page.get_by_text("Patient level").wait_for(timeout=120_000)
    _wait_idle(page, 120)
    imgs = page.locator('[data-testid="stImage"] img')
    imgs.nth(4).wait_for(timeout=60_000)  # a rerun can still be replacing the images when the status widget is hidden
    assert imgs.count() >= 5
    for model in ("ghost", "pruned", "kd", "baseline"):
        assert page.get_by_text(model, exact=True).count() >= 1
    assert page.get_by_text(re.compile(r"P\(severe\) \d+%")).count() >= 4
    _shot(page, "compare")

    _goto(page, f"{app_url}/data_browser", "Data Browser")
    page.locator('[data-testid="stImage"] img').first.wait_for()
    _shot(page, "data_browser")
    # the phantom set on the phantoms: every labelled case scored, one row per model
    page.get_by_role("tab", name="Models on this data").click()
    page.get_by_role("button", name=re.compile(r"Score the \d+ labelled case")).click()
    page.get_by_text("Download every slice's scores (CSV)").wait_for(timeout=120_000)
    _wait_idle(page)
    assert page.get_by_text("sens / spec at the card's point").count() >= 1
    _shot(page, "data_browser_models")

    # Training: start a tiny run, see it queued/running, cancel it
    _goto(page, f"{app_url}/training", "Training")
    page.get_by_label("Epochs", exact=True).fill("20")
    page.get_by_label("Image size (px)", exact=True).fill("32")
    page.get_by_label("Batch size", exact=True).fill("8")
    page.get_by_role("button", name="Start run").click()
    page.get_by_text(re.compile("Queued")).first.wait_for()
    page.get_by_role("tab", name="Runs", exact=True).click()
    page.get_by_role("button", name="Cancel").wait_for()
    page.get_by_role("button", name="Cancel").click()
    page.get_by_text("CANCELLED", exact=True).first.wait_for(timeout=60_000)
    _shot(page, "training")

    # Efficiency: a quick measurement (smallest input, fewest repeats, batch 1, no int8 calibration) of the four
    # tiny models; every runtime is measured by tests/ctmodels/test_export_efficiency.py
    _goto(page, f"{app_url}/efficiency", "Efficiency")
    for label in ("Input size (px)", "Timed repeats per model"):
        thumb = page.locator('[data-testid="stSlider"]').filter(has_text=label).get_by_role("slider")
        thumb.focus()
        thumb.press("Home")
        _wait_idle(page)
    for label, last in (("Runtimes", "ONNX Runtime int8"), ("Batch sweep", "8")):  # Backspace drops the last choice
        select = page.locator('[data-testid="stMultiSelect"]').filter(has_text=label)
        assert select.get_by_text(last).count() == 1
        select.locator("input").press("Backspace")
        _wait_idle(page)
        assert select.get_by_text(last).count() == 0
    page.get_by_role("button", name="Measure now").click()
    # the measured figure itself, not the static paper table, which shows before the measurement ends
    page.get_by_text("Latency at batch 1, 64×64", exact=False).first.wait_for(timeout=420_000)
    _wait_idle(page, 240)
    page.locator('[data-testid="stPlotlyChart"]').first.wait_for(timeout=60_000)  # plotly renders after the run ends
    _shot(page, "efficiency")


def test_a_bookmarked_page_opens_in_the_app_navigation(app_url, browser_page):
    """The first request a fresh server gets is a page link (a bookmark, a link in an invite): the app's own
    navigation and sidebar come with it, not Streamlit's file-based page list."""
    page = browser_page
    _goto(page, f"{app_url}/training", "Training")
    nav = page.locator('[data-testid="stSidebarNav"]')
    nav.get_by_text("Data Browser", exact=True).wait_for(timeout=30_000)
    assert nav.get_by_text("data browser", exact=True).count() == 0 and nav.get_by_text("app", exact=True).count() == 0
    assert page.get_by_text("research software, not for diagnostic use").count() == 1  # app.py ran
    _shot(page, "deep_link_training")


def test_a_real_upload_gets_the_real_ct_set(app_url_both_sets, browser_page, real_data):
    """An Inf-Net JPG (a real 8-bit slice) on Compare: the real-CT set's verdicts and CAMs, no phantom warning."""
    page = browser_page
    _goto(page, f"{app_url_both_sets}/compare", "Compare models")
    page.get_by_role("radio", name="Upload").click() if page.get_by_role("radio", name="Upload").count() else \
        page.get_by_text("Upload", exact=True).first.click()
    _wait_idle(page)
    jpg = (real_data / "infnet-semiseg" / "Imgs" / "3.jpg").read_bytes()
    page.locator('input[type="file"]').first.set_input_files(
        files=[{"name": "infnet-3.jpg", "mimeType": "image/jpeg", "buffer": jpg}])
    page.get_by_text(re.compile(r"All \d verdicts, CAMs and lesion maps computed")).wait_for(timeout=120_000)
    _wait_idle(page, 120)
    imgs = page.locator('[data-testid="stImage"] img')
    imgs.nth(8).wait_for(timeout=60_000)  # the input, four CAMs, four learned lesion maps
    for model in ("ghost", "pruned", "kd", "baseline"):
        assert page.get_by_text(f"{model} (real CT)", exact=True).filter(visible=True).count() >= 1
    assert page.get_by_text(re.compile(r"P\(severe\) \d+%")).count() >= 4
    # each map drawn at its card's cut (chosen on the validation masks)
    assert page.get_by_text(re.compile(r"Learned lesion map \(orange: P\(lesion\) ≥ \d+ %")).count() == 4
    assert page.get_by_text(re.compile(r"Learned involvement: \d+\.\d %")).count() == 4
    assert page.get_by_text("trained on synthetic phantoms").count() == 0
    _shot(page, "compare_real")
