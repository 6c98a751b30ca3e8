"""The server's whole-scan slots: explanations (Grad-CAM) wait while other sessions' scans are queued or scored,
so under load every session gets its verdicts first; never longer than their cap."""

from __future__ import annotations

import threading
import time

from ctmodels import work_slots
from tests.builders import wait_until


def test_an_explanation_waits_for_the_scans_under_way():
    release, order = threading.Event(), []

    def scan() -> None:
        with work_slots.whole_scan_work():
            order.append("scan starts")
            release.wait(30)
            order.append("scan ends")

    def explanation() -> None:
        with work_slots.explanation_work():
            order.append("explained")

    assert not work_slots.busy()
    scanning = threading.Thread(target=scan)
    scanning.start()
    wait_until(lambda: order == ["scan starts"], 10, "the scan to hold its slot")
    assert work_slots.busy()
    explaining = threading.Thread(target=explanation)
    explaining.start()
    time.sleep(0.3)  # a thread that did not wait would have explained by now
    assert order == ["scan starts"]
    release.set()
    scanning.join(10)
    explaining.join(10)
    assert order == ["scan starts", "scan ends", "explained"] and not work_slots.busy()


def test_an_explanation_waits_no_longer_than_its_cap():
    held = work_slots.whole_scan_work()  # a scan that never ends, held by this thread
    held.__enter__()
    try:
        t0 = time.monotonic()
        with work_slots.explanation_work(max_wait_s=0.2):
            waited = time.monotonic() - t0
            assert work_slots.busy()
        assert waited >= 0.2
    finally:
        held.__exit__(None, None, None)
    assert not work_slots.busy()
