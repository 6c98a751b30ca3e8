"""Publishing a run's checkpoint into a model set and creating run folders go through ctmodels.atomic."""

from __future__ import annotations

from pathlib import Path

from ctmodels.atomic import read_json, write_json_atomic
from ctmodels.checkpoint import CARD_NAME, checkpoints_in
from ctmodels.preprocess import PREPROCESS_VERSION
from training.config import RunConfig
from training.jobs.registry import RunStore
from training.recipes.model_set import publish


def _run_model(folder: Path, text: str) -> Path:
    folder.mkdir(parents=True)
    (folder / CARD_NAME).write_text(text)
    (folder / "weights.safetensors").write_bytes(text.encode())
    return folder


def test_publish_replaces_the_published_folder_and_leaves_nothing_beside_it(tmp_path: Path) -> None:
    models = tmp_path / "models"
    dest = models / "kd"
    publish(_run_model(tmp_path / "run1" / "model", '{"v": 1}'), dest)
    publish(_run_model(tmp_path / "run2" / "model", '{"v": 2}'), dest)
    assert (dest / CARD_NAME).read_text() == '{"v": 2}'
    assert sorted(p.name for p in dest.iterdir()) == [CARD_NAME, "weights.safetensors"]
    assert [p.name for p in models.iterdir()] == ["kd"]
    assert checkpoints_in(models) == [dest]
    assert (tmp_path / "run2" / "model" / CARD_NAME).is_file()  # a copy: the run keeps its own


def test_run_folders_are_created_whole_with_their_config(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    run = store.create(RunConfig())
    assert run.dir.is_dir() and (run.dir / "config.json").is_file()
    assert not [p for p in run.dir.parent.iterdir() if p.name.startswith(".")]


def test_a_set_build_retrains_what_the_recipe_changed_and_its_students(tmp_path: Path, tiny_real_models: Path,
                                                                       monkeypatch) -> None:
    """``make real-models`` keeps built models, but not under a recipe that builds them differently: a step whose
    settings changed is retrained, and so is every model distilled or pruned from a retrained baseline, one that
    learned from inputs an older preprocessing prepared, and one whose card does not say where its map is drawn."""
    import dataclasses
    import shutil
    from types import SimpleNamespace

    from training.recipes import model_set
    from training.recipes.real import REAL

    folder = tmp_path / "real"
    shutil.copytree(tiny_real_models, folder)
    trained: list[str] = []

    def fake_execute(cfg, store=None):  # what a step would publish: the model it replaces, re-copied
        key = cfg.name.removeprefix("real-")
        trained.append(key)
        shutil.copytree(folder / key, tmp_path / "runs" / key, dirs_exist_ok=True)
        return SimpleNamespace(model_dir=tmp_path / "runs" / key, id=f"run-{key}")

    monkeypatch.setattr(model_set, "execute", fake_execute)
    monkeypatch.setenv("CTSS_LANES", "1")  # every step in this process, where the fake runs
    monkeypatch.setattr(model_set, "serve", lambda f: {})

    def recipe(**lr: float) -> model_set.Recipe:  # (the quick settings fix the epochs)
        steps = [(k, model_set.merge(s, {"optim": {"lr": lr[k]}}) if k in lr else s)
                 for k, s in REAL.steps if k in ("baseline", "ghost", "pruned", "kd")]
        return dataclasses.replace(REAL, steps=steps, folder=lambda: folder)

    model_set.build(recipe(), quick=True, store=RunStore(tmp_path / "store"))
    assert trained == []
    model_set.build(recipe(ghost=1e-4), quick=True, store=RunStore(tmp_path / "store"))
    assert trained == ["ghost"]
    trained.clear()
    model_set.build(recipe(baseline=1e-4), quick=True, store=RunStore(tmp_path / "store"))
    assert trained == ["baseline", "ghost", "pruned", "kd"]
    trained.clear()
    card = folder / "pruned" / "card.json"  # learned from inputs an older preprocessing prepared
    old = read_json(card)
    old["versions"]["preprocess"] = "1"
    write_json_atomic(card, old)
    model_set.build(recipe(), quick=True, store=RunStore(tmp_path / "store"))  # (the copies kept the old settings)
    assert trained == ["pruned"]
    trained.clear()
    old["versions"]["preprocess"] = str(PREPROCESS_VERSION)  # as a real retraining would have written it
    write_json_atomic(folder / "pruned" / "card.json", old)
    card = folder / "kd" / "card.json"  # built before cards said where the lesion map is drawn
    old = read_json(card)
    assert old["lesion_map"]["cut"] > 0
    del old["lesion_map"]
    write_json_atomic(card, old)
    model_set.build(recipe(), quick=True, store=RunStore(tmp_path / "store"))
    assert trained == ["kd"]
