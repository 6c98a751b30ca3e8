"""Where things live on disk: the workspace (demo data, runs, models) and the data roots.

The workspace defaults to ``./workspace`` beside the code and can be moved with
``CTSS_WORKSPACE``. Server-side folders may only be opened under the data roots (the
workspace and ``../shared/data`` by default, or ``CTSS_DATA_ROOTS``, ``os.pathsep``-separated).
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


class PathNotAllowedError(PermissionError):
    """A folder outside the configured data roots (or escaping one through '..' or a link)."""


def workspace_dir() -> Path:
    return Path(os.environ.get("CTSS_WORKSPACE", REPO_ROOT / "workspace")).resolve()


def demo_data_dir() -> Path:
    """The embedded phantom dataset, built once by ``make run``."""
    return workspace_dir() / "data" / "demo"


def real_data_dir() -> Path:
    """The real sample data shipped beside the repository (may be absent)."""
    return Path(os.environ.get("CTSS_REAL_DATA", REPO_ROOT.parent / "shared" / "data" / "real")).resolve()


def models_dir() -> Path:
    """The phantom (demo) model set; other sets live in sub-folders (see ``real_models_dir``)."""
    return workspace_dir() / "models"


def real_models_dir() -> Path:
    """The model set trained on the real sample data (``make real-models``)."""
    return models_dir() / "real"


def runs_dir() -> Path:
    return workspace_dir() / "runs"


def data_roots() -> list[Path]:
    env = os.environ.get("CTSS_DATA_ROOTS")
    if env:
        return [Path(p).resolve() for p in env.split(os.pathsep) if p.strip()]
    return [workspace_dir(), (REPO_ROOT.parent / "shared" / "data").resolve()]


def resolve_under_roots(path: str | Path, roots: list[Path] | None = None) -> Path:
    """Resolve a user-typed folder and refuse it unless it lies inside a data root.

    Symlinks are resolved first, so a link that points out of a root is refused too.
    """
    roots = data_roots() if roots is None else roots
    raw = Path(str(path).strip()).expanduser()
    if not str(raw):
        raise PathNotAllowedError("Enter a folder path.")
    candidate = (raw if raw.is_absolute() else workspace_dir() / raw).resolve()
    for root in roots:
        if candidate == root or root in candidate.parents:
            return candidate
    allowed = ", ".join(str(r) for r in roots)
    raise PathNotAllowedError(f"Folders can only be opened inside the data roots ({allowed}).")
