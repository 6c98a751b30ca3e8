"""A model kind is one entry in the registry: registered once, it is found everywhere a user meets kinds
(the CLI, the Training page, checkpoints, the benchmark's order, Compare's default selection)."""

from __future__ import annotations

import pytest
import torch.nn as nn

from ctmodels.checkpoint import ModelCard, load, save
from ctmodels.nets import (
    MODEL_KEYS,
    ModelSpec,
    compare_defaults,
    register,
    resnet18,
    resolve_arch,
    unregister,
)


def tiny_net(num_classes: int = 2, in_channels: int = 1, hidden: int = 4) -> nn.Module:
    return nn.Sequential(nn.Conv2d(in_channels, hidden, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(hidden, num_classes))


KIND = ModelSpec("tiny_test", "Tiny test kind", "A four-channel conv net, registered by a test.", "a test",
                 tiny_net, defaults={"hidden": 4}, compare_rank=10)


@pytest.fixture()
def extra_kind():
    register(KIND)
    yield KIND
    unregister(KIND.key)


def test_a_registered_kind_is_found_everywhere(extra_kind, workspace, capsys):
    # the registry itself: keys, defaults resolved into cards, Compare's defaults (after the four built-ins)
    assert "tiny_test" in MODEL_KEYS and MODEL_KEYS[-1] == "tiny_test"
    assert resolve_arch("tiny_test") == {"hidden": 4}
    assert compare_defaults()[-1] == "tiny_test"

    # checkpoints: saved and loaded by key, rebuilt from the card's resolved arch
    folder = save(tiny_net(), ModelCard(model_key="tiny_test"), workspace / "models" / "tiny_test")
    model, card = load(folder)
    assert card.model_key == "tiny_test" and card.arch == {"hidden": 4} and model[0].out_channels == 4

    # the CLI: named in --model's help (and accepted by the config check)
    from training.__main__ import main

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "tiny_test" in capsys.readouterr().out

    # the benchmark: measured with the demo set, in registry order
    from training.evaluation.bench import model_folders

    assert list(model_folders()) == ["tiny_test"]

    # Compare: offered with its title, selected by default
    from ui.models import available_models, default_selection

    choices = available_models()
    assert [(c.key, c.title) for c in choices] == [("tiny_test", "Tiny test kind")]
    assert default_selection(choices) == ["tiny_test"]

    # the Training page: a choice of the Model box, with its title
    from tests.ui.apptest import open_page

    at = open_page("views/training.py")
    assert not at.exception
    box = next(s for s in at.selectbox if s.label == "Model")
    assert box.options[-1] == "tiny_test — Tiny test kind"


def test_a_kind_cannot_be_registered_twice():
    with pytest.raises(ValueError, match="already registered"):
        register(ModelSpec("baseline", "again", "", "", resnet18))
    assert list(MODEL_KEYS) == ["baseline", "ghost", "pruned", "kd", "sparse", "ghost_kd"]
