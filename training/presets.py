"""One-click recipes for the Training page and the CLI (``--config training/configs/<name>.yaml``)."""

from __future__ import annotations

from pathlib import Path

import yaml

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


def presets() -> dict[str, dict]:
    """Title → config dict, read from ``training/configs/*.yaml`` (the file's ``title`` key)."""
    out = {}
    for f in sorted(CONFIG_DIR.glob("*.yaml")):
        d = yaml.safe_load(f.read_text()) or {}
        title = d.pop("title", f.stem)
        out[title] = d
    return out
