"""Pruning: structured L1 filter pruning with layer sensitivity (paper 000) and unstructured
magnitude pruning with a polynomial-decay sparsity schedule (paper 001).

Structured pruning (torch-pruning) really removes channels, so the dense net gets smaller and
faster; unstructured pruning only zeroes weights: the model is *sparse*, not faster on dense
kernels, and is reported that way.
"""

from __future__ import annotations

import copy
import logging
from typing import Callable

import torch
import torch.nn as nn
import torch_pruning as tp

from ctmodels.nets.lesion import LesionOutputs, has_lesion_head

from ..config import PruneConfig

log = logging.getLogger(__name__)
STAGES = ("layer1", "layer2", "layer3", "layer4")
# Channel counts stay multiples of 16: oneDNN/ORT kernels are vectorised in such blocks, and odd
# widths cost latency that the saved MACs never give back.
ROUND_TO = 16


def _forward_all(model: nn.Module, x: torch.Tensor):
    """Every output the net has: a lesion head must be traced too, or pruning a stage would leave the
    head's input projection at the old width."""
    return model.forward_both(x) if has_lesion_head(model) else model(x)


def count(model: nn.Module, size: int) -> tuple[int, int]:
    """(MACs, parameters) at a 1×1×size×size input, the lesion head included."""
    ex = torch.zeros(1, 1, size, size, device=next(model.parameters()).device)
    macs, params = tp.utils.count_ops_and_params(LesionOutputs(model) if has_lesion_head(model) else model, ex)
    return int(macs), int(params)


def _pruner(model: nn.Module, size: int, ratios: dict[str, float], steps: int) -> tp.pruner.MetaPruner:
    ex = torch.zeros(1, 1, size, size, device=next(model.parameters()).device)
    head = [model.lesion_head] if has_lesion_head(model) else []  # its own widths stay; its inputs follow
    return tp.pruner.MetaPruner(
        model, ex, importance=tp.importance.MagnitudeImportance(p=1), pruning_ratio=0.0,
        pruning_ratio_dict={getattr(model, s): r for s, r in ratios.items() if r > 0},
        iterative_steps=steps, ignored_layers=[model.fc, *head],
        round_to=ROUND_TO, forward_fn=_forward_all,
    )


def stage_sensitivity(
    model: nn.Module, size: int, ratio: float, score: Callable[[nn.Module], float]
) -> dict[str, float]:
    """Validation-loss increase when each stage alone loses ``ratio`` of its filters (L1)."""
    base = score(model)
    out = {}
    for stage in STAGES:
        trial = copy.deepcopy(model)
        _pruner(trial, size, {stage: ratio}, 1).step()
        out[stage] = score(trial) - base
        log.info("sensitivity %s: val loss +%.4f at %.0f%% pruned", stage, out[stage], 100 * ratio)
    return out


def stage_ratios(sensitivity: dict[str, float], cfg: PruneConfig) -> dict[str, float]:
    """Least sensitive stage gets the target ratio, the most sensitive ``min_ratio``, linear between."""
    if not cfg.sensitivity or not sensitivity:
        return {s: cfg.target_ratio for s in STAGES}
    lo, hi = min(sensitivity.values()), max(sensitivity.values())
    span = hi - lo if hi > lo else 1.0
    low = min(cfg.min_ratio, cfg.target_ratio)
    return {s: round(cfg.target_ratio - (cfg.target_ratio - low) * (v - lo) / span, 4) for s, v in sensitivity.items()}


class StructuredPruner:
    """Iterative L1 filter pruning to per-stage ratios in ``steps`` equal steps."""

    def __init__(self, model: nn.Module, size: int, ratios: dict[str, float], steps: int) -> None:
        self.model = model
        self.pruner = _pruner(model, size, ratios, steps)
        self.steps = steps

    def step(self) -> None:
        self.pruner.step()


class MagnitudeMasks:
    """Global magnitude pruning of conv and linear weights with a polynomial-decay schedule.

    s(t) = s_final · (1 - (1 - t/T)^power) for t ≤ T (0 → s_final), then fixed (Zhu & Gupta 2017,
    the TF-MOT PolynomialDecay schedule paper 001 used). Masks are re-applied after every step.

    The input conv and the classifier stay dense (0.03 % of a ResNet50's weights): under one global
    threshold the classifier, whose weights are small, lost 99.8 % of them, the logits shrank to almost
    nothing and the temperature fit ended at its floor (real-CT set, AdamW 5e-5 fine-tune). A lesion head
    stays dense too (0.6 %): paper 001 sparsifies the backbone, and its small 1x1 projections would
    meet the classifier's fate.
    """

    DENSE = ("conv1", "fc", "lesion_head")

    def __init__(self, model: nn.Module, final_sparsity: float, total_steps: int, power: float = 3.0,
                 update_every: int = 5) -> None:
        self.params = {n: m.weight for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))
                       and n.split(".")[0] not in self.DENSE}
        self.final, self.total, self.power, self.every = final_sparsity, max(1, total_steps), power, update_every
        self.masks: dict[str, torch.Tensor] = {}
        self.current = 0.0

    def target(self, step: int) -> float:
        t = min(1.0, step / self.total)
        return self.final * (1.0 - (1.0 - t) ** self.power)

    @torch.no_grad()
    def update(self, sparsity: float) -> None:
        flat = torch.cat([p.detach().abs().flatten() for p in self.params.values()])
        k = int(sparsity * flat.numel())
        if k < 1:
            return
        threshold = torch.kthvalue(flat.cpu(), k).values.item()
        self.masks = {n: (p.detach().abs() > threshold) for n, p in self.params.items()}
        self.current = sparsity
        self.apply()

    @torch.no_grad()
    def apply(self) -> None:
        for n, p in self.params.items():
            if n in self.masks:
                p.mul_(self.masks[n])

    def hook(self, steps_per_epoch: int) -> Callable[[int, int], None]:
        def after_step(epoch: int, batch: int) -> None:
            step = epoch * steps_per_epoch + batch + 1
            if step % self.every == 0 or step >= self.total:
                s = self.target(step)
                if s > self.current + 1e-4:
                    self.update(s)
                    return
            self.apply()
        return after_step

    def sparsity(self) -> float:
        total = sum(p.numel() for p in self.params.values())
        zeros = sum(int((p == 0).sum()) for p in self.params.values())
        return zeros / total
