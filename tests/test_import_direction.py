"""DESIGN.md's import direction: pages → ui → ctmodels, pages → training, ui → training (runs only),
training → ctmodels; ctmodels imports nothing of ours and never streamlit; training never streamlit."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OURS = {"ctmodels", "ui", "training", "pages", "app"}
ALLOWED = {
    "ctmodels": {"ctmodels"},
    "training": {"ctmodels", "training"},
    "ui": {"ctmodels", "ui", "training"},
    "pages": {"ctmodels", "ui", "training"},
}
FORBIDDEN_THIRD_PARTY = {"ctmodels": {"streamlit", "plotly"}, "training": {"streamlit"}}
UI_MAY_USE_FROM_TRAINING = {"training.runs", "training.registry"}


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append(node.module)
    return out


def _files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py")) if (ROOT / package).is_dir() else []


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_import_direction(package):
    bad = []
    for f in _files(package):
        for mod in _imports(f):
            top = mod.split(".")[0]
            if top in OURS and top not in ALLOWED[package]:
                bad.append(f"{f.relative_to(ROOT)} imports {mod}")
            if top in FORBIDDEN_THIRD_PARTY.get(package, set()):
                bad.append(f"{f.relative_to(ROOT)} imports {mod}")
            if package == "ui" and top == "training" and mod not in UI_MAY_USE_FROM_TRAINING:
                bad.append(f"{f.relative_to(ROOT)} imports {mod} (ui may only read runs)")
    assert not bad, "\n".join(bad)


def test_the_checker_catches_a_violation(tmp_path):
    f = tmp_path / "x.py"
    f.write_text("import streamlit\nfrom ui.render import slice_rgb\n")
    assert _imports(f) == ["streamlit", "ui.render"]
