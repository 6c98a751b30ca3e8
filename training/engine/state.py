"""Resumable training state without pickles: model checkpoint + optimizer tensors (safetensors)
+ JSON (epoch, history, scheduler, RNG states), swapped in atomically after every epoch."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ctmodels.atomic import recover_dir, replace_dir
from ctmodels.checkpoint import ModelCard
from ctmodels.checkpoint import load as load_checkpoint
from ctmodels.checkpoint import save as save_checkpoint


def _split_optimizer(opt_state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors: dict[str, torch.Tensor] = {}
    plain: dict[str, Any] = {"param_groups": opt_state["param_groups"], "state": {}}
    for pid, entry in opt_state["state"].items():
        plain["state"][str(pid)] = {}
        for name, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"{pid}.{name}"] = value.detach().cpu().contiguous()
            else:
                plain["state"][str(pid)][name] = value
    return tensors, plain


def _join_optimizer(tensors: dict[str, torch.Tensor], plain: dict) -> dict:
    state: dict[int, dict[str, Any]] = {int(pid): dict(v) for pid, v in plain["state"].items()}
    for key, value in tensors.items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    return {"state": state, "param_groups": plain["param_groups"]}


@dataclass
class TrainState:
    epoch: int  # last finished epoch (0-based)
    history: list[dict[str, Any]]
    best_val_loss: float
    best_epoch: int


def save_state(
    folder: Path, model: torch.nn.Module, card: ModelCard, optimizer: torch.optim.Optimizer,
    scheduler: Any, state: TrainState,
) -> None:
    tensors, plain = _split_optimizer(optimizer.state_dict())
    tensors["__torch_rng"] = torch.get_rng_state()
    meta = {
        "epoch": state.epoch, "history": state.history, "best_val_loss": state.best_val_loss,
        "best_epoch": state.best_epoch, "optimizer": plain,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "numpy_rng": np.random.get_state(legacy=False),
        "python_rng": random.getstate(),
    }

    def fill(tmp: Path) -> None:
        save_checkpoint(model, card, tmp / "model")
        save_file(tensors, str(tmp / "optimizer.safetensors"))
        (tmp / "state.json").write_text(json.dumps(meta, default=_json_default))

    replace_dir(folder, fill)


def _json_default(o: Any) -> Any:
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(type(o))


def has_state(folder: Path) -> bool:
    recover_dir(folder)
    return (folder / "state.json").is_file()


def load_state_model(folder: Path, device: torch.device) -> torch.nn.Module:
    """The model saved with the training state (build the optimizer on it, then restore_state)."""
    recover_dir(folder)
    model, _ = load_checkpoint(folder / "model", device=device)
    return model


def restore_state(
    folder: Path, optimizer: torch.optim.Optimizer, scheduler: Any
) -> TrainState:
    """Restore optimizer, scheduler and RNG states in place; return the epoch history."""
    meta = json.loads((folder / "state.json").read_text())
    tensors = load_file(str(folder / "optimizer.safetensors"))
    torch.set_rng_state(tensors.pop("__torch_rng"))
    optimizer.load_state_dict(_join_optimizer(tensors, meta["optimizer"]))
    if scheduler is not None and meta.get("scheduler"):
        scheduler.load_state_dict(meta["scheduler"])
    np.random.set_state(meta["numpy_rng"])
    py = meta["python_rng"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    state = TrainState(meta["epoch"], meta["history"], meta["best_val_loss"], meta["best_epoch"])
    return state
