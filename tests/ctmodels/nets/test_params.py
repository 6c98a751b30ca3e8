"""Parameter counts at 2 classes / 1 channel, against the budgets docs/models.md states."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn as nn

from ctmodels import checkpoint
from ctmodels.nets import MODEL_KEYS, create, extract_widths

BASELINE = 23_505_858  # measured: torchvision ResNet50, 1-channel stem, 2-class fc


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def meta_create(key: str, **kw) -> nn.Module:
    with torch.device("meta"):
        return create(key, **kw)


def test_baseline_params() -> None:
    assert abs(n_params(meta_create("baseline")) - 23.5e6) <= 0.01 * 23.5e6
    assert n_params(meta_create("baseline")) == BASELINE
    assert n_params(meta_create("sparse")) == BASELINE


def test_ghost_default_within_budget() -> None:
    assert n_params(meta_create("ghost")) <= 0.45 * BASELINE


def test_kd_params() -> None:
    assert abs(n_params(meta_create("kd")) - 11.2e6) <= 0.01 * 11.2e6
    assert n_params(meta_create("ghost_kd")) < 0.6 * n_params(meta_create("kd"))


@pytest.fixture(scope="module")
def l1_pruned() -> nn.Module:
    """The baseline after torch-pruning's L1 filter pruning at 50% (fc outputs kept)."""
    tp = pytest.importorskip("torch_pruning")
    model = create("baseline").eval()
    tp.pruner.MetaPruner(
        model,
        torch.randn(1, 1, 64, 64),
        importance=tp.importance.MagnitudeImportance(p=1),
        pruning_ratio=0.5,
        ignored_layers=[model.fc],
    ).step()
    return model


def test_pruned_widths_rebuild_exactly(l1_pruned: nn.Module) -> None:
    widths = extract_widths(l1_pruned)
    assert widths["fc"] == [2, 1024]  # fc keeps 2 outputs but loses half its inputs
    rebuilt = create("pruned", widths=widths, base="baseline").eval()
    rebuilt.load_state_dict(l1_pruned.state_dict(), strict=True)
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        assert torch.equal(l1_pruned(x), rebuilt(x))


def test_pruned_budget_after_checkpoint_roundtrip(l1_pruned: nn.Module, tmp_path: Path) -> None:
    card = checkpoint.ModelCard(model_key="pruned", input_size=64)
    loaded, card = checkpoint.load(checkpoint.save(l1_pruned, card, tmp_path / "pruned"))
    assert card.arch["widths"]
    assert n_params(loaded) <= 0.55 * BASELINE
    assert n_params(loaded) == n_params(l1_pruned)


@pytest.mark.parametrize("key", MODEL_KEYS)
def test_forward_64(key: str) -> None:
    model = create(key).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, 64, 64)).shape == (2, 2)


def test_forward_224_baseline() -> None:
    model = create("baseline").eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, 224, 224)).shape == (1, 2)
