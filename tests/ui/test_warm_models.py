"""Compare loads the models a real upload gets while the radiologist is still picking the scan
(``ui.models.warm``): after a server start the first upload no longer waits for them."""

from __future__ import annotations

import threading
from pathlib import Path

from ctmodels.workspace import models_dir, real_models_dir
from ui import models


def _warm_and_wait(choices, monkeypatch) -> list[str]:
    loads: list[str] = []
    real_load = models.load_model

    def recording(folder, name=None):
        loads.append(str(Path(folder).relative_to(models_dir())))
        return real_load(folder, name)

    with monkeypatch.context() as patched:
        patched.setattr(models, "load_model", recording)
        models.warm(choices)
        for thread in [t for t in threading.enumerate() if t.name == "warm-models"]:
            thread.join(120)
    return loads


def test_the_real_sets_default_models_load_once_before_the_upload(workspace_with_both_sets, monkeypatch):
    models._warmed.clear()
    models._load.clear()
    choices = (models._published(models_dir(), models.PHANTOM)
               + models._published(real_models_dir(), models.REAL, models.REAL_SUFFIX))
    assert sorted(_warm_and_wait(choices, monkeypatch)) == ["real/baseline", "real/ghost", "real/kd", "real/pruned"]
    assert _warm_and_wait(choices, monkeypatch) == []  # once per model and weights

    def not_again(folder, name=None):
        raise AssertionError(f"{folder} loaded twice")

    monkeypatch.setattr(models, "load_model", not_again)
    real = [c for c in choices if c.set == models.REAL and c.key in ("baseline", "ghost", "pruned", "kd")]
    assert len(real) == 4 and all(models.loaded(c).name == c.name for c in real)  # the page finds them cached


def test_without_a_real_set_the_phantom_set_loads(workspace_with_models, monkeypatch):
    models._warmed.clear()
    models._load.clear()
    choices = models._published(models_dir(), models.PHANTOM)
    assert sorted(_warm_and_wait(choices, monkeypatch)) == ["baseline", "ghost", "kd", "pruned"]
