"""Every training loss in one place: the verdict's cross-entropy (hard or soft targets), the lesion term,
and knowledge distillation of both (Hinton et al. 2015).

A net with a lesion head (``ctmodels.nets.lesion``) is trained on two things at once: its mild/severe
logits against the run's targets, and its lesion map against the slice's infection mask (Dice + BCE
over the whole input; outside the lungs the mask says "no lesion", which is true). Slices without a
mask add nothing to the lesion term. A distilled student also learns the teacher's lesion map where
the teacher has one, with the same weight split (``alpha``) as the logits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class Batch:
    """One training batch as the loss sees it."""

    x: torch.Tensor  # (N, 1, S, S) normalised inputs
    target: torch.Tensor  # (N,) P(severe) to learn: the hard label or the soft involvement target
    lesion: torch.Tensor | None = None  # (N, 1, S, S) infection mask share in [0, 1]
    has_lesion: torch.Tensor | None = None  # (N,) bool: which slices have a mask


#: loss(class logits, lesion logits or None, batch) → scalar.
LossFn = Callable[[torch.Tensor, "torch.Tensor | None", Batch], torch.Tensor]


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy of mild/severe logits against a target P(severe); equals the usual loss for 0/1 targets."""
    t = target.to(logits.dtype)
    return F.cross_entropy(logits, torch.stack([1 - t, t], dim=1), label_smoothing=label_smoothing)


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 - soft Dice over the whole batch (one overlap for all pixels: mild slices with tiny or no lesions
    do not each make a noisy per-image Dice)."""
    p = torch.sigmoid(logits)
    inter = (p * target).sum()
    return 1.0 - (2.0 * inter + eps) / (p.sum() + target.sum() + eps)


def lesion_loss(lesion_logits: torch.Tensor, batch: Batch) -> torch.Tensor:
    """Dice + BCE of the lesion map against the masks of the slices that have one; 0 when none does."""
    if batch.lesion is None or batch.has_lesion is None or not bool(batch.has_lesion.any()):
        return lesion_logits.sum() * 0.0
    keep = batch.has_lesion
    z, t = lesion_logits[keep].float(), batch.lesion[keep].to(lesion_logits.dtype).float()
    return F.binary_cross_entropy_with_logits(z, t) + soft_dice_loss(z, t)


def ce_loss(label_smoothing: float = 0.0, lesion_weight: float = 1.0) -> LossFn:
    def loss(logits: torch.Tensor, lesion: torch.Tensor | None, batch: Batch) -> torch.Tensor:
        out = soft_cross_entropy(logits, batch.target, label_smoothing)
        if lesion is not None and lesion_weight:
            out = out + lesion_weight * lesion_loss(lesion, batch)
        return out
    return loss


def teacher_outputs(teacher: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The teacher's logits, and its lesion logits when it has a head."""
    if getattr(teacher, "lesion_head", None) is not None:
        logits, lesion = teacher.forward_both(x)
        return logits.float(), lesion.float()
    return teacher(x).float(), None


def kd_loss(teacher: nn.Module, temperature: float = 4.0, alpha: float = 0.5, lesion_weight: float = 1.0,
            lesion_alpha: float | None = None) -> LossFn:
    """α·CE(student, targets) + (1-α)·T²·KL(teacher‖student), and for lesion maps
    β·(Dice + BCE against the mask) + (1-β)·BCE against the teacher's map; β = ``lesion_alpha``, else α.

    The teacher sees exactly the (augmented) batch the student sees; it is frozen in eval mode."""
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    t2 = temperature * temperature
    beta = alpha if lesion_alpha is None else lesion_alpha

    def loss(student_logits: torch.Tensor, student_lesion: torch.Tensor | None, batch: Batch) -> torch.Tensor:
        with torch.no_grad():
            teacher_logits, teacher_lesion = teacher_outputs(teacher, batch.x)
        hard = soft_cross_entropy(student_logits, batch.target)
        soft = F.kl_div(
            F.log_softmax(student_logits / temperature, dim=1),
            F.softmax(teacher_logits / temperature, dim=1),
            reduction="batchmean",
        ) * t2
        out = alpha * hard + (1.0 - alpha) * soft
        if student_lesion is not None and lesion_weight:
            own = lesion_loss(student_lesion, batch)
            if teacher_lesion is not None and beta < 1.0:
                mimic = F.binary_cross_entropy_with_logits(student_lesion.float(), torch.sigmoid(teacher_lesion))
                own = beta * own + (1.0 - beta) * mimic
            out = out + lesion_weight * own
        return out

    return loss
