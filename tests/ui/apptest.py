"""Helpers for AppTest: run the real entry point and switch to a page, as a browser session does."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[2] / "app.py")


def open_page(page: str, timeout: float = 120) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=timeout)
    at.run()
    if page != "views/home.py":
        at.switch_page(page)
        at.run()
    return at


def texts(at: AppTest) -> str:
    """All markdown, captions, errors, infos, warnings and successes of the page as one string."""
    parts = []
    for kind in ("markdown", "caption", "error", "info", "warning", "success", "title", "subheader"):
        parts += [str(e.value) for e in getattr(at, kind)]
    for img in at.image:
        parts += img.captions
    for bar in at.get("progress"):
        parts.append(bar.proto.text)
    return "\n".join(parts)
