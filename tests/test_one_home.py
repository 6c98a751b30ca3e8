"""Issue 24's "one place" for each decision, kept: each is defined once and nothing writes it out again.

A grep over the source tree (ctmodels, training, ui, views, app.py); each rule names its one home."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted(p for d in ("ctmodels", "training", "ui", "views") for p in (ROOT / d).rglob("*.py")) + [ROOT / "app.py"]

# (what, pattern, the one file allowed to hold it)
RULES = [
    ("the severity cut (25 % of lung)", r"(?i)threshold\w*\s*[:=][^\n#]*\b25(\.0)?\b", "ctmodels/verdict.py"),
    ("the checkpoint card's file name", r"[\"']card\.json[\"']", "ctmodels/checkpoint.py"),
    ("crash-safe renames", r"os\.replace\(|mkstemp\(", "ctmodels/atomic.py"),
    ("the optimiser list", r"[\"']adamw[\"'],\s*[\"']adam[\"']", "training/config.py"),
    ("the input normalisation default", r"[\"']std[\"']:\s*0\.\d|std:\s*float\s*=\s*0\.\d", "ctmodels/preprocess.py"),
    ("the real sample datasets' titles", r"(?:RealSample|NamedSource|Source)\([\"']real-", "ctmodels/datasets/sources.py"),
    ("the lung field (HU segmentation or 8-bit estimate)", r"def lung_field\(", "ctmodels/imaging/lung_field.py"),
    ("the patient-level aggregation", r"def patient_score\(", "ctmodels/inference.py"),
    ("assessing a scan", r"def assess\(", "ctmodels/assessment.py"),
    ("a model key's validation", r"def check_key\(", "ctmodels/nets/registry.py"),
    ("finding checkpoints", r"def checkpoints_in\(", "ctmodels/checkpoint.py"),
    ("which slices a model may score", r"def in_scope\(", "ctmodels/inference.py"),
    ("the card-vs-arch check", r"def check_io\(", "ctmodels/nets/registry.py"),
    ("how outputs become a verdict", r"class VerdictRule\b", "ctmodels/verdict.py"),
]


def offenders(pattern: str, home: str, sources: list[Path] = SOURCES, root: Path = ROOT) -> list[str]:
    rx = re.compile(pattern)
    return [f"{p.relative_to(root)}:{n}: {line.strip()}" for p in sources if p.relative_to(root).as_posix() != home
            for n, line in enumerate(p.read_text().splitlines(), 1) if rx.search(line)]


@pytest.mark.parametrize("what, pattern, home", RULES, ids=[r[0] for r in RULES])
def test_defined_once(what, pattern, home):
    assert re.search(pattern, (ROOT / home).read_text()), f"{what}: its home {home} no longer holds it"
    bad = offenders(pattern, home)
    assert not bad, f"{what} is written outside {home}:\n" + "\n".join(bad)


def test_the_rules_catch_a_copy(tmp_path):
    """A copy of each decision outside its home is found (the patterns are not vacuous)."""
    copy = tmp_path / "views" / "copy.py"
    copy.parent.mkdir()
    copy.write_text('threshold_pct: float = 25.0\nCARD = "card.json"\nos.replace(a, b)\nOPTS = ["adamw", "adam"]\n'
                    'NORM = {"std": 0.5}\nNamedSource("real-x", "t", ())\ndef lung_field(v):\ndef patient_score(p):\n'
                    'def assess(v, m):\ndef check_key(k):\ndef checkpoints_in(root):\ndef in_scope(m):\ndef check_io(a):\n'
                    'class VerdictRule:\n')
    found = {what for what, pattern, home in RULES if offenders(pattern, home, [copy], tmp_path)}
    assert found == {r[0] for r in RULES}
