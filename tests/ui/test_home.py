"""Home page (AppTest): three-sentence pitch, workspace contents with counts, start links."""

from __future__ import annotations

from pathlib import Path

from tests.ui.apptest import open_page, texts
from ui.navigation import PAGES

REPO = Path(__file__).resolve().parents[2]


def test_home_lists_workspace_contents(workspace):
    at = open_page("views/home.py")
    assert not at.exception
    body = texts(at)
    assert "mild" in body and "severe" in body and "Grad-CAM" in body
    table = next(d.value for d in at.dataframe if "dataset" in d.value.columns)
    demo = table[table["kind"] == "synthetic"]
    assert len(demo) == 4 and set(demo["cases"]) == {6, sum(1 for _ in (workspace / "data/demo/png").glob("*/*.png"))}
    assert {m.label: m.value for m in at.metric}["Trained models"] == "0"
    assert "Radiologist" in body and "Researcher" in body


def test_navigation_lists_only_working_pages(workspace):
    """The navigation lists every page in views/ and nothing else, and each opens (its own heading, no error)."""
    assert PAGES[0].path == "views/home.py"
    assert {p.path for p in PAGES} == {f"views/{f.name}" for f in (REPO / "views").glob("*.py")}
    at = open_page("views/home.py")
    headings = [at.title[0].value]
    for page in PAGES[1:]:
        at.switch_page(page.path).run()
        assert not at.exception, (page.path, at.exception)
        headings.append(at.title[0].value)
    assert len(set(headings)) == len(PAGES), headings


def test_home_without_demo_data(tmp_path, monkeypatch):
    monkeypatch.setenv("CTSS_WORKSPACE", str(tmp_path / "empty-ws"))
    monkeypatch.setenv("CTSS_REAL_DATA", str(tmp_path / "no-real"))
    at = open_page("views/home.py")
    assert not at.exception
    assert "make run" in texts(at)


def test_home_lists_both_model_sets_and_what_each_learned_from(workspace_with_both_sets):
    at = open_page("views/home.py")
    assert not at.exception
    models = next(d.value for d in at.dataframe if "trained on" in d.value.columns)
    assert set(models["set"]) == {"phantom (synthetic)", "real CT"}
    real = models[models["set"] == "real CT"]
    assert real["trained on"].str.contains("real 8-bit slices").all()
    assert models[models["set"] != "real CT"]["trained on"].str.contains("phantom").all()
    assert set(models["measured on"].str.split(",").str[0]) <= {"test split", "validation split"}
    assert {m.label: m.value for m in at.metric}["Model sets"] == "2"
    assert "No real-CT model set yet" not in texts(at)
