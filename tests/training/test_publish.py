"""Publishing a run's checkpoint into a model set and creating run folders go through ctmodels.atomic."""

from __future__ import annotations

from pathlib import Path

from ctmodels.checkpoint import CARD_NAME, checkpoints_in
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
