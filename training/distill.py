"""Knowledge distillation (Hinton et al. 2015): α·CE(student, targets) + (1-α)·T²·KL(teacher‖student).

The hard term uses the run's targets: the labels, or the soft involvement targets when the data says so.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .loop import LossFn, soft_cross_entropy


def kd_loss(teacher: nn.Module, temperature: float = 4.0, alpha: float = 0.5) -> LossFn:
    """The teacher sees exactly the (augmented) batch the student sees; it is frozen in eval mode."""
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    t2 = temperature * temperature

    def loss(student_logits: torch.Tensor, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            teacher_logits = teacher(x).float()
        hard = soft_cross_entropy(student_logits, target)
        soft = F.kl_div(
            F.log_softmax(student_logits / temperature, dim=1),
            F.softmax(teacher_logits / temperature, dim=1),
            reduction="batchmean",
        ) * t2
        return alpha * hard + (1.0 - alpha) * soft

    return loss
