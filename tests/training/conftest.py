"""Tiny training settings: 32-px inputs on the 6-patient phantom set, so a run takes seconds."""

from __future__ import annotations

import pytest

from training.config import RunConfig, merge

TINY = {
    "data": {"source": "demo", "split": [0.5, 0.17, 0.33], "max_slices_per_case": 4},
    "optim": {"epochs": 1, "batch_size": 8},
    "preprocessing": {"size": 32},
    "augment": {"enabled": False},
    "threads": 2,
}


@pytest.fixture()
def tiny():
    def make(**override) -> RunConfig:
        return RunConfig.from_dict(merge(merge(RunConfig().to_dict(), TINY), override))
    return make
