"""DESIGN.md's import direction: pages (views/) → ui → ctmodels, pages → training, ui → training (runs only),
training → ctmodels; ctmodels imports nothing of ours and never streamlit; training never streamlit."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OURS = {"ctmodels", "ui", "training", "views", "app"}
ALLOWED = {
    "ctmodels": {"ctmodels"},
    "training": {"ctmodels", "training"},
    "ui": {"ctmodels", "ui", "training"},
    "views": {"ctmodels", "ui", "training"},
}
FORBIDDEN_THIRD_PARTY = {"ctmodels": {"streamlit", "plotly"}, "training": {"streamlit"}}
UI_MAY_USE_FROM_TRAINING = {"training.runs"}
#: command-line front ends: what they share with the app lives in a module both import
CLI_MODULES = {"training.bench", "training.__main__"}


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append(node.module)
    return out


def violations(root: Path, package: str) -> list[str]:
    """Every import in ``root/package`` that breaks the direction above, as 'file imports module'."""
    bad = []
    for f in sorted((root / package).rglob("*.py")) if (root / package).is_dir() else []:
        for mod in _imports(f):
            top = mod.split(".")[0]
            if top in OURS and top not in ALLOWED[package]:
                bad.append(f"{f.relative_to(root)} imports {mod}")
            if top in FORBIDDEN_THIRD_PARTY.get(package, set()):
                bad.append(f"{f.relative_to(root)} imports {mod}")
            if package == "ui" and top == "training" and mod not in UI_MAY_USE_FROM_TRAINING:
                bad.append(f"{f.relative_to(root)} imports {mod} (ui may only read runs)")
            if package != "training" and any(mod == c or mod.startswith(c + ".") for c in CLI_MODULES):
                bad.append(f"{f.relative_to(root)} imports {mod} (a CLI module)")
    return bad


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_import_direction(package):
    bad = violations(ROOT, package)
    assert not bad, "\n".join(bad)


def test_the_rules_name_modules_that_exist():
    for mod in UI_MAY_USE_FROM_TRAINING | CLI_MODULES:
        assert (ROOT / (mod.replace(".", "/") + ".py")).is_file(), f"{mod} is allowed but does not exist"


def test_the_checker_catches_each_kind_of_violation(tmp_path):
    """A deliberately broken copy of the layout: every rule must fire once, and clean files pass."""
    files = {
        "ctmodels/upward.py": "from ui.render import slice_rgb\n",  # ctmodels imports nothing of ours
        "ctmodels/nets/deep.py": "import training.runs\n",  # ... at any depth
        "ctmodels/draws.py": "import plotly.express as px\n",  # no plotting in the core
        "training/page.py": "import streamlit as st\n",  # training never streamlit
        "ui/trains.py": "from training.pipeline import execute\n",  # ui may only read runs
        "ui/reads.py": "from training.runs import RunStore\nfrom ctmodels.nets import create\n",  # allowed
        "training/fine.py": "from ctmodels.checkpoint import load\nfrom .data import prepare\n",  # allowed
        "views/measures.py": "from training.bench import held_out\nfrom training.heldout import held_out\n",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    found = [v for package in ALLOWED for v in violations(tmp_path, package)]
    assert sorted(found) == sorted([
        "ctmodels/upward.py imports ui.render", "ctmodels/nets/deep.py imports training.runs",
        "ctmodels/draws.py imports plotly.express", "training/page.py imports streamlit",
        "ui/trains.py imports training.pipeline (ui may only read runs)",
        "views/measures.py imports training.bench (a CLI module)",
    ])
