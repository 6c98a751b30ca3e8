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
UI_MAY_USE_FROM_TRAINING = {"training.jobs.registry"}
#: command-line front ends: what they share with the app lives in a module both import
CLI_MODULES = {"training.evaluation.bench", "training.__main__"}
#: training's sub-packages, lowest first: a module imports only its own layer and those below it
#: (top-level module: config; ``__main__`` is the CLI over all of them).
TRAINING_LAYERS = ("", "jobs", "data", "evaluation", "engine", "recipes")


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


def _training_imports(path: Path, root: Path) -> list[str]:
    """Every ``training`` module ``path`` imports, relative imports resolved."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    out = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names if a.name.split(".")[0] == "training"]
        elif isinstance(node, ast.ImportFrom):
            base = parts[: len(parts) - node.level] if node.level else []
            mod = ".".join(base + ([node.module] if node.module else []))
            if mod.split(".")[0] == "training":
                out += [mod] if node.module else [f"{mod}.{a.name}" for a in node.names]
    return out


def _layer(module: str) -> int:
    parts = module.split(".")
    return TRAINING_LAYERS.index(parts[1]) if len(parts) > 2 and parts[1] in TRAINING_LAYERS else 0


def layer_violations(root: Path) -> list[str]:
    """Imports inside ``training`` that reach a higher sub-package (``TRAINING_LAYERS``)."""
    bad = []
    for f in sorted((root / "training").rglob("*.py")):
        if f.name == "__main__.py" and f.parent == root / "training":
            continue
        me = ".".join(f.relative_to(root).with_suffix("").parts)
        bad += [f"{f.relative_to(root)} imports {m} (a higher layer)" for m in _training_imports(f, root)
                if _layer(m) > _layer(me)]
    return bad


def test_training_layers():
    bad = layer_violations(ROOT)
    assert not bad, "\n".join(bad)
    assert {p.name for p in (ROOT / "training").iterdir() if (p / "__init__.py").is_file()} == set(TRAINING_LAYERS) - {""}


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
        "ctmodels/nets/deep.py": "import training.jobs.registry\n",  # ... at any depth
        "ctmodels/draws.py": "import plotly.express as px\n",  # no plotting in the core
        "training/page.py": "import streamlit as st\n",  # training never streamlit
        "ui/trains.py": "from training.engine.pipeline import execute\n",  # ui may only read runs
        "ui/reads.py": "from training.jobs.registry import RunStore\nfrom ctmodels.nets import create\n",  # allowed
        "training/engine/fine.py": "from ctmodels.checkpoint import load\nfrom ..data.prepare import prepare\n",  # allowed
        "training/data/up.py": "from ..engine.loop import fit\n",  # data sits below the engine
        "views/measures.py": "from training.evaluation.bench import held_out\nfrom training.evaluation.heldout import held_out\n",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    found = [v for package in ALLOWED for v in violations(tmp_path, package)] + layer_violations(tmp_path)
    assert sorted(found) == sorted([
        "ctmodels/upward.py imports ui.render", "ctmodels/nets/deep.py imports training.jobs.registry",
        "ctmodels/draws.py imports plotly.express", "training/page.py imports streamlit",
        "ui/trains.py imports training.engine.pipeline (ui may only read runs)",
        "views/measures.py imports training.evaluation.bench (a CLI module)",
        "training/data/up.py imports training.engine.loop (a higher layer)",
    ])
