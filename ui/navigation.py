"""The app's pages, in navigation order: one table for the entry point and for the test that checks it."""

from __future__ import annotations

from typing import NamedTuple


class PageEntry(NamedTuple):
    path: str
    title: str
    icon: str


PAGES: tuple[PageEntry, ...] = (
    PageEntry("views/home.py", "Home", ":material/home:"),
    PageEntry("views/compare.py", "Compare", ":material/compare:"),
    PageEntry("views/data_browser.py", "Data Browser", ":material/folder_open:"),
    PageEntry("views/training.py", "Training", ":material/model_training:"),
    PageEntry("views/efficiency.py", "Efficiency", ":material/speed:"),
)
