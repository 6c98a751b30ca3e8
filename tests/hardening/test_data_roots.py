"""Server-side folders open only under the data roots: '..', symlinks out and absolute paths elsewhere refused."""

from __future__ import annotations

import pytest

from ctmodels.workspace import PathNotAllowedError, resolve_under_roots


def test_data_roots(tmp_path):
    root = tmp_path / "root"
    (root / "ds").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "link").symlink_to(outside)
    roots = [root.resolve()]
    assert resolve_under_roots(root / "ds", roots) == (root / "ds").resolve()
    for bad in (root / ".." / "outside", root / "link", "/etc", "/", ""):
        with pytest.raises(PathNotAllowedError):
            resolve_under_roots(bad, roots)


def test_default_roots_are_workspace_and_shared_data(workspace):
    from ctmodels.workspace import data_roots

    roots = data_roots()
    assert roots[0] == workspace.resolve() and roots[1].name == "data" and roots[1].parent.name == "shared"
