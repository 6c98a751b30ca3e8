"""Checkpoints: bit-exact round trips, refusals with readable reasons, atomic overwrite."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.utils.prune as prune

from ctmodels import atomic
from ctmodels.checkpoint import (
    CardError,
    CheckpointError,
    CheckpointNotFoundError,
    IntegrityError,
    ModelCard,
    PickledCheckpointError,
    ShapeMismatchError,
    UnknownModelKeyError,
    UnsafeCheckpointPathError,
    checkpoint_id,
    load,
    read_card,
    save,
)
from ctmodels.nets import MODEL_KEYS, create

REPO = Path(__file__).resolve().parents[2]
X = torch.randn(1, 1, 64, 64, generator=torch.Generator().manual_seed(0))


def assert_same(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    a.eval(), b.eval()
    with torch.no_grad():
        assert torch.equal(a(X), b(X))


def prune_l1(model: nn.Module, ratio: float = 0.5) -> nn.Module:
    tp = pytest.importorskip("torch_pruning")
    tp.pruner.MetaPruner(
        model,
        torch.randn(1, 1, 64, 64),
        importance=tp.importance.MagnitudeImportance(p=1),
        pruning_ratio=ratio,
        ignored_layers=[model.fc],
    ).step()
    return model


def rewrite_card(folder: Path, **changes) -> None:
    data = json.loads((folder / "card.json").read_text())
    data.update(changes)
    (folder / "card.json").write_text(json.dumps(data))


@pytest.fixture(scope="module")
def kd_ckpt(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, nn.Module]:
    """One small saved checkpoint that refusal tests copy and then damage."""
    model = create("kd").eval()
    folder = save(model, ModelCard(model_key="kd", input_size=64), tmp_path_factory.mktemp("kd") / "ckpt")
    return folder, model


@pytest.fixture(scope="module")
def pruned_ckpt(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, nn.Module]:
    model = prune_l1(create("baseline").eval())
    folder = save(model, ModelCard(model_key="pruned", input_size=64), tmp_path_factory.mktemp("pr") / "ckpt")
    return folder, model


def copy_of(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / src.name
    shutil.copytree(src, dst)
    return dst


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("key", MODEL_KEYS)
def test_round_trip_every_key(tmp_path: Path, key: str) -> None:
    model = create(key).eval()
    folder = save(model, ModelCard(model_key=key, input_size=64), tmp_path / key)
    assert sorted(p.name for p in folder.iterdir()) == ["card.json", "weights.safetensors"]
    loaded, card = load(folder)
    assert not loaded.training and card.model_key == key
    assert_same(model, loaded)
    assert len(card.weights_sha256) == 64 and card.versions["torch"] == torch.__version__


def test_round_trip_torch_pruning_baseline(pruned_ckpt: tuple[Path, nn.Module]) -> None:
    folder, model = pruned_ckpt
    loaded, card = load(folder)
    assert card.arch["base"] == "baseline" and card.arch["widths"]["fc"] == [2, 1024]
    assert_same(model, loaded)


def test_round_trip_sparse_with_prune_reparametrisation(tmp_path: Path) -> None:
    model = create("sparse").eval()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # half of every conv zeroed in place (cheap stand-in for magnitude pruning)
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.mul_(torch.rand(m.weight.shape, generator=gen) >= 0.5)
    # Two layers still carry torch's prune re-parametrisation (weight_orig + weight_mask): save folds it.
    hooked = [(model.layer1[0].conv1, "weight"), (model.layer4[2].conv3, "weight")]
    for m, name in hooked:
        prune.random_unstructured(m, name, amount=0.5)
    folder = save(model, ModelCard(model_key="sparse", input_size=64), tmp_path / "sparse")
    for m, name in hooked:  # fold the masks the plain way to compare against
        prune.remove(m, name)
    loaded, card = load(folder)
    assert_same(model, loaded)
    assert 0.45 < card.sparsity < 0.6  # conv weights about half zero, fc untouched
    assert "layer1.0.conv1.weight_orig" not in loaded.state_dict()


def test_card_json_round_trip_keeps_unknown_keys(kd_ckpt: tuple[Path, nn.Module], tmp_path: Path) -> None:
    card = ModelCard(model_key="kd", metrics={"auc": torch.tensor(0.5)}, parent_run="run-1")
    again = ModelCard.from_dict(json.loads(card.to_json()))
    assert again == ModelCard.from_dict(card.to_dict()) and again.metrics == {"auc": 0.5}
    assert again.window == {"level": -600.0, "width": 1500.0} and again.class_names == ["mild", "severe"]
    folder = copy_of(kd_ckpt[0], tmp_path)
    rewrite_card(folder, from_the_future={"x": 1}, format_version=2)
    _, newer = load(folder)
    assert newer.extra == {"from_the_future": {"x": 1}}
    assert newer.to_dict()["from_the_future"] == {"x": 1}
    with pytest.raises(CardError):
        ModelCard.from_json("{not json")
    with pytest.raises(CardError, match="model_key"):
        ModelCard.from_dict({"arch": {}})


def test_checkpoint_id_is_stable_and_tracks_what_changes_outputs(
    kd_ckpt: tuple[Path, nn.Module], tmp_path: Path
) -> None:
    folder, model = kd_ckpt
    cid = checkpoint_id(folder)
    assert len(cid) == 16 and cid == checkpoint_id(folder)
    resaved = save(model, ModelCard(model_key="kd", input_size=64, notes="again"), tmp_path / "again")
    assert checkpoint_id(resaved) == cid
    rewrite_card(resaved, temperature=1.7)
    assert checkpoint_id(resaved) != cid
    tempered = checkpoint_id(resaved)
    rewrite_card(resaved, lesion_map={"cut": 0.2})  # where the lesion map is drawn changes what it shows
    assert checkpoint_id(resaved) != tempered


# --------------------------------------------------------------------------- refusals


def test_refuses_pickled_file_without_unpickling(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(1)}, path)
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("a pickle was opened"))
    with pytest.raises(PickledCheckpointError, match="arbitrary code; convert to safetensors"):
        load(path)
    only_pth = tmp_path / "legacy"
    only_pth.mkdir()
    shutil.copy(path, only_pth / "best.pth")
    with pytest.raises(PickledCheckpointError, match="arbitrary code"):
        load(only_pth)


def test_refuses_weights_outside_folder(kd_ckpt: tuple[Path, nn.Module], tmp_path: Path) -> None:
    folder = copy_of(kd_ckpt[0], tmp_path)
    outside = tmp_path / "elsewhere.safetensors"
    shutil.copy(folder / "weights.safetensors", outside)
    for name in ("../elsewhere.safetensors", str(outside), "sub/../../elsewhere.safetensors"):
        rewrite_card(folder, weights_file=name)
        with pytest.raises(UnsafeCheckpointPathError, match="outside"):
            load(folder)
    rewrite_card(folder, weights_file="link.safetensors")
    (folder / "link.safetensors").symlink_to(outside)
    with pytest.raises(UnsafeCheckpointPathError):
        load(folder)
    rewrite_card(folder, weights_file="weights.pt")
    with pytest.raises(PickledCheckpointError):
        load(folder)


def test_file_inside_a_checkpoint_means_its_folder(kd_ckpt: tuple[Path, nn.Module]) -> None:
    folder, model = kd_ckpt
    assert read_card(folder / "card.json") == read_card(folder)
    assert_same(model, load(folder / "weights.safetensors")[0])


def test_missing_pieces(kd_ckpt: tuple[Path, nn.Module], tmp_path: Path) -> None:
    with pytest.raises(CheckpointNotFoundError):
        load(tmp_path / "nothing-here")
    folder = copy_of(kd_ckpt[0], tmp_path)
    (folder / "weights.safetensors").unlink()
    with pytest.raises(CheckpointNotFoundError, match="weights"):
        load(folder)
    (folder / "card.json").unlink()
    with pytest.raises(CheckpointNotFoundError, match="card.json"):
        load(folder)


def test_unknown_model_key(kd_ckpt: tuple[Path, nn.Module], tmp_path: Path) -> None:
    folder = copy_of(kd_ckpt[0], tmp_path)
    rewrite_card(folder, model_key="vit_huge")
    with pytest.raises(UnknownModelKeyError, match="vit_huge"):
        load(folder)


def test_shape_mismatch_from_edited_widths(pruned_ckpt: tuple[Path, nn.Module], tmp_path: Path) -> None:
    folder = copy_of(pruned_ckpt[0], tmp_path)
    card = json.loads((folder / "card.json").read_text())
    out_ch, in_ch, groups = card["arch"]["widths"]["layer2.0.conv2"]
    card["arch"]["widths"]["layer2.0.conv2"] = [out_ch + 1, in_ch, groups]
    (folder / "card.json").write_text(json.dumps(card))
    with pytest.raises(ShapeMismatchError) as err:
        load(folder)
    assert err.value.layer.startswith("layer2.0.") and "layer2.0." in str(err.value)


def test_shape_mismatch_from_swapped_weights(kd_ckpt: tuple[Path, nn.Module], tmp_path: Path) -> None:
    folder = save(create("ghost_kd"), ModelCard(model_key="ghost_kd"), tmp_path / "ghost")
    shutil.copy(kd_ckpt[0] / "weights.safetensors", folder / "weights.safetensors")
    rewrite_card(folder, weights_sha256=read_card(kd_ckpt[0]).weights_sha256)
    with pytest.raises(ShapeMismatchError, match="do not belong"):
        load(folder)


def test_hash_mismatch(kd_ckpt: tuple[Path, nn.Module], tmp_path: Path) -> None:
    folder = copy_of(kd_ckpt[0], tmp_path)
    other = save(create("kd"), ModelCard(model_key="kd"), tmp_path / "other")
    shutil.copy(other / "weights.safetensors", folder / "weights.safetensors")
    with pytest.raises(IntegrityError, match="checksum"):
        load(folder)


def test_save_refuses_model_that_does_not_fit_its_card(
    pruned_ckpt: tuple[Path, nn.Module], tmp_path: Path
) -> None:
    with pytest.raises(ShapeMismatchError):
        save(pruned_ckpt[1], ModelCard(model_key="baseline"), tmp_path / "wrong")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(UnknownModelKeyError):
        save(create("kd"), ModelCard(model_key="kd2"), tmp_path / "wrong")


def test_save_refuses_to_replace_a_non_checkpoint_folder(tmp_path: Path) -> None:
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "thesis.docx").write_text("precious")
    with pytest.raises(CheckpointError, match="not a checkpoint folder"):
        save(create("kd"), ModelCard(model_key="kd"), tmp_path / "home")
    assert (tmp_path / "home" / "thesis.docx").read_text() == "precious"


# --------------------------------------------------------------------------- atomicity


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.parent.iterdir() if p.name.startswith(f".{folder.name}."))


def test_overwrite_holds_the_second(tmp_path: Path) -> None:
    first, second = create("kd").eval(), create("kd").eval()
    folder = tmp_path / "ckpt"
    save(first, ModelCard(model_key="kd", notes="first"), folder)
    save(second, ModelCard(model_key="kd", notes="second"), folder)
    loaded, card = load(folder)
    assert card.notes == "second"
    assert_same(second, loaded)
    assert leftovers(folder) == []


def _failing_replace(monkeypatch: pytest.MonkeyPatch, fail_on: set[int]) -> None:
    real = os.replace
    calls = {"n": 0}

    def fake(src, dst):
        calls["n"] += 1
        if calls["n"] in fail_on:
            raise OSError(f"simulated crash at rename #{calls['n']}")
        return real(src, dst)

    monkeypatch.setattr(os, "replace", fake)


def test_failed_commit_rolls_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = create("kd").eval()
    folder = save(first, ModelCard(model_key="kd", notes="first"), tmp_path / "ckpt")
    _failing_replace(monkeypatch, {2})  # old-aside succeeds, the commit rename fails
    with pytest.raises(OSError, match="simulated"):
        save(create("kd"), ModelCard(model_key="kd", notes="second"), folder)
    monkeypatch.undo()
    loaded, card = load(folder)
    assert card.notes == "first"
    assert_same(first, loaded)
    assert leftovers(folder) == []


def test_crash_between_renames_is_recovered_by_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = create("kd").eval()
    folder = save(first, ModelCard(model_key="kd", notes="first"), tmp_path / "ckpt")
    _failing_replace(monkeypatch, {2, 3})  # commit and in-process rollback both fail: like a kill -9
    with pytest.raises(OSError):
        save(create("kd"), ModelCard(model_key="kd", notes="second"), folder)
    monkeypatch.undo()
    assert not folder.exists() and any(".old-" in n for n in leftovers(folder))
    loaded, card = load(folder)
    assert card.notes == "first"
    assert_same(first, loaded)
    assert leftovers(folder) == []


def test_load_ignores_and_cleans_stale_temp_folders(kd_ckpt: tuple[Path, nn.Module], tmp_path: Path) -> None:
    folder = copy_of(kd_ckpt[0], tmp_path)
    stale = tmp_path / f".{folder.name}.tmp-dead"
    fresh = tmp_path / f".{folder.name}.tmp-live"
    for p in (stale, fresh):
        shutil.copytree(folder, p)
        (p / "card.json").write_text("garbage")
    old = time.time() - 2 * atomic.STALE_TMP_SECONDS
    os.utime(stale, (old, old))
    load(folder)
    assert not stale.exists() and fresh.exists()  # a fresh one may be a save still running


# --------------------------------------------------------------------------- independence


def test_load_in_a_process_that_imports_only_ctmodels(kd_ckpt: tuple[Path, nn.Module]) -> None:
    folder, _ = kd_ckpt
    code = (
        "import sys, torch\n"
        "from ctmodels.checkpoint import load\n"
        f"model, card = load({str(folder)!r})\n"
        "assert model(torch.zeros(1, 1, 64, 64)).shape == (1, 2)\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('training', 'ui', 'views', 'streamlit', 'plotly')]\n"
        "assert not bad, bad\n"
        "print('ok', card.model_key)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok kd"
