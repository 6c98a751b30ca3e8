"""One-click recipes for the Training page and the CLI (``--config training/configs/<name>.yaml``)."""

from __future__ import annotations

from pathlib import Path

import yaml

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


REAL_CT_PRESET = "Real CT — the make real-models recipe (baseline)"


def presets() -> dict[str, dict]:
    """Title → config dict: the real-CT set's own recipe, then ``training/configs/*.yaml`` (their ``title`` key)."""
    from ..config import merge
    from .real import REAL

    out = {REAL_CT_PRESET: merge(REAL.common, REAL.step("baseline"))}
    for f in sorted(CONFIG_DIR.glob("*.yaml")):
        d = yaml.safe_load(f.read_text()) or {}
        title = d.pop("title", f.stem)
        out[title] = d
    return out
