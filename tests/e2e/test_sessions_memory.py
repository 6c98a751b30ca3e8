"""Five radiologists upload the real COVID-CT-MD P002 series (133 DICOM slices, a 140 MB float32 volume)
on Compare at the same moment: the server's peak memory (resident set, sampled every 0.2 s) stays within
2.5 GB (asserted), and every session shows its verdicts within 25 s of the uploads (the Performance issue's
goal: 22.7-23.1 s on a normal-speed hour of the shared 2-core host with AVX-512, over 25 s on a slow one and
38-39 s on an AVX2-only one, where it is reported as an expected failure with the time it took; ``make bench``
measures the same in-process). The server serves
the real-CT set as a deployment does: the one ``make real-models`` built in this checkout's workspace (real
weights on their chosen ONNX Runtime), else the tiny set with its served runtimes chosen (``training serve``).
Slow."""

from __future__ import annotations

import re
import threading
import time

import psutil
import pytest

from tests.conftest import REPO, _link_or_copy, p002_zip
from tests.e2e.conftest import ARTIFACTS, CHROMIUM, SERVERS, _serve

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SESSIONS = 5
LIMIT_GB = 2.5
VERDICTS_WITHIN_S = 25.0


def _served_here(folder) -> bool:
    from ctmodels.checkpoint import checkpoint_id
    from ctmodels.serving import ONNX_FILES, read_choice

    choice = read_choice(folder) or {}
    return choice.get("runtime") in ONNX_FILES and choice.get("checkpoint_id") == checkpoint_id(folder)


@pytest.fixture()
def served_real_set(workspace_with_models, request) -> tuple[str, str]:
    """(app url, which set): the app serving the phantom set and a served real-CT set (module docstring)."""
    import shutil

    built = REPO / "workspace" / "models" / "real"
    keys = ("baseline", "ghost", "pruned", "kd")
    target = workspace_with_models / "models" / "real"
    if all((built / k).is_dir() and _served_here(built / k) for k in keys):
        for k in keys:
            shutil.copytree(built / k, target / k, copy_function=_link_or_copy)
        which = "the real-CT set make real-models built"
    else:
        from training.evaluation.served import serve_set

        shutil.copytree(request.getfixturevalue("tiny_real_models"), target, copy_function=_link_or_copy)
        runtimes = {k: c["runtime"] for k, c in serve_set(target, force=True).items()}
        which = f"the tiny real-CT set, served as {runtimes}"
    with _serve(workspace_with_models) as url:
        yield url, which


def test_five_sessions_scoring_p002_stay_within_the_memory_budget(served_real_set, workspace_with_models,
                                                                    real_data, tmp_path):
    from playwright.sync_api import sync_playwright

    app_url, which = served_real_set
    server = psutil.Process(SERVERS[app_url].pid)
    upload = tmp_path / "P002.zip"  # picked from disk as a user does: an in-memory buffer crawls through DevTools
    upload.write_bytes(p002_zip(real_data))
    peak = [server.memory_info().rss]
    timeline: list[tuple[float, float]] = []  # (seconds, GB): where the peak falls, printed
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            try:
                rss = server.memory_info().rss
            except psutil.Error:
                return
            peak[0] = max(peak[0], rss)
            timeline.append((time.time() - t0, rss / 2**30))
            time.sleep(0.2)

    t0 = time.time()
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                        args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
            pages = [browser.new_context(viewport={"width": 1400, "height": 1000}).new_page() for _ in range(SESSIONS)]
            for page in pages:
                page.set_default_timeout(600_000)
                page.goto(f"{app_url}/compare")
                page.get_by_role("heading", name="Compare models").first.wait_for()
                radio = page.get_by_role("radio", name="Upload")
                (radio if radio.count() else page.get_by_text("Upload", exact=True).first).click()
                page.locator('input[type="file"]').first.wait_for(state="attached")
            uploaded = time.time()
            for page in pages:  # all five uploads in flight together
                page.locator('input[type="file"]').first.set_input_files(str(upload))
            shown: list[float] = []  # the verdicts (under load Grad-CAM follows: explanations wait for queued scans)
            explained: list[float] = []
            for k, page in enumerate(pages):
                try:
                    page.get_by_text(re.compile(r"All \d verdicts")).first.wait_for(timeout=300_000)
                    shown.append(time.time() - uploaded)
                except Exception:  # keep what each session showed, and what the server said
                    ARTIFACTS.mkdir(exist_ok=True)
                    for j, other in enumerate(pages):
                        other.screenshot(path=str(ARTIFACTS / f"sessions_memory_{j}.png"), full_page=True)
                    log = (workspace_with_models / "server.log").read_text()[-3000:]
                    pytest.fail(f"session {k} showed no verdicts in 5 min (screenshots in {ARTIFACTS}); "
                                f"server log:\n{log}")
            for page in pages:
                page.get_by_text(re.compile(r"All \d verdicts, CAMs and lesion maps computed")).wait_for(timeout=300_000)
                explained.append(time.time() - uploaded)
            browser.close()
    finally:
        stop.set()
        watcher.join(2)
    gb = peak[0] / 2**30
    print(f"{SESSIONS} sessions scoring P002 with {which}: server peak RSS {gb:.2f} GB, verdicts shown after "
          + ", ".join(f"{s:.1f}" for s in shown) + " s, with Grad-CAM after " + ", ".join(f"{s:.1f}" for s in explained)
          + " s; every 10 s: "
          + " ".join(f"{t:.0f}s {g:.2f}" for t, g in timeline[::50]))
    assert gb <= LIMIT_GB, f"server peak {gb:.2f} GB > {LIMIT_GB} GB"
    if max(shown) > VERDICTS_WITHIN_S:  # an open goal (docs/performance.md): reported, the memory bound enforced
        pytest.xfail(f"the last session showed its verdicts after {max(shown):.1f} s (goal {VERDICTS_WITHIN_S:.0f} s): "
                     "five sessions share two cores, each ~5 s of both cores' work plus its browser's")
