"""A real app server (``streamlit run app.py``) on a free port, and headless Debian Chromium."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.builders import wait_until

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = REPO / "test-artifacts"
#: url -> the server process behind it (tests that watch the server's memory)
SERVERS: dict[str, subprocess.Popen] = {}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _serve(ws: Path):
    """``streamlit run app.py`` on a free port with ``ws`` as its workspace, until the block ends."""
    port = _free_port()
    env = {**os.environ, "CTSS_WORKSPACE": str(ws), "CTSS_THREADS": "1", "PYTHONPATH": str(REPO)}
    log = open(ws / "server.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port), "--server.address",
         "127.0.0.1", "--server.headless", "true"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            return urllib.request.urlopen(url + "/_stcore/health", timeout=2).read() == b"ok"
        except OSError:
            return False

    try:
        try:
            wait_until(healthy, 60, "the app's health check", interval=0.3)
        except AssertionError as exc:
            log_tail = (ws / "server.log").read_text()[-2000:]
            raise RuntimeError(f"the app did not start ({exc}): {log_tail}") from None
        SERVERS[url] = proc
        yield url
    finally:
        SERVERS.pop(url, None)
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture()
def app_url(workspace_with_models):
    with _serve(workspace_with_models) as url:
        yield url


@pytest.fixture()
def app_url_both_sets(workspace_with_both_sets):
    """The app with the phantom set and a tiny real-CT set (skips without ../shared)."""
    with _serve(workspace_with_both_sets) as url:
        yield url


@pytest.fixture()
def browser_page():
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian chromium is not installed: `make test` installs it (apt-get install -y chromium); "
                    "the browser test is part of the suite and never skipped")
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"],
        )
        page = browser.new_page(viewport={"width": 1500, "height": 1100})
        page.set_default_timeout(60_000)
        try:
            yield page
        finally:
            browser.close()
