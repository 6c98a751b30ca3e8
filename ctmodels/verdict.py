"""How a model's outputs become P(severe) and a verdict: the score, its calibration and the cut.

A model card's ``verdict`` section says it; a card without one (written before lesion heads) keeps
the old rule: the classification head's logits, temperature-scaled, severe at P ≥ 0.5.

- ``score``: ``head`` (the classifier's logit difference), ``lesion`` (the learned involvement, lesion
  area over lung field, as log-odds against the severity threshold: logit r − logit t, the scale the
  soft targets use, so 25 % involvement is 0) or ``both`` (the mean of the two).
- calibration: P(severe) = σ(a·score + b), fitted on the validation split against the targets the model
  learned (a = 1/T, b = 0 is plain temperature scaling, what ``head`` cards had).
- ``cut``: the verdict is severe when P(severe) ≥ cut; chosen on validation data (Youden's J, ties to
  the cut nearest 0.5), recorded with that split's sensitivity and specificity.
- An operating point chosen by cross-validation (``VerdictRule.at_involvement``): severe when the learned
  involvement reaches a fixed share of the lung, written as the calibration P(severe) = σ(logit r − logit
  op), cut 0.5, so P(severe) = 0.5 is the operating point on the page too.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

SCORES = ("head", "lesion", "both")
#: The severity cut, the one home of it: a slice or scan is severe at this share of its lung involved (the label
#: rule of every dataset, the phantoms' grading, the verdict's scale, the pages' threshold marks).
DEFAULT_THRESHOLD_PCT = 25.0
#: Involvement is clipped to this range before log-odds (as the soft targets are).
INVOLVEMENT_CLIP = (0.002, 0.998)


def involvement_logit(percent: np.ndarray, threshold_pct: float) -> np.ndarray:
    """logit(involvement) − logit(threshold): 0 at the severity threshold, the soft targets' scale."""
    r = np.clip(np.asarray(percent, dtype=np.float64) / 100.0, *INVOLVEMENT_CLIP)
    t = threshold_pct / 100.0
    return np.log(r / (1 - r)) - np.log(t / (1 - t))


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(z, dtype=np.float64)))


@dataclass
class VerdictRule:
    """One model's path from outputs to verdict (module docstring); round-trips through its card."""

    score: str = "head"
    a: float = 1.0
    b: float = 0.0
    cut: float = 0.5
    threshold_pct: float = DEFAULT_THRESHOLD_PCT
    validation: dict[str, Any] = field(default_factory=dict)  # how the cut did where it was chosen

    @staticmethod
    def from_card(card: Any) -> "VerdictRule":
        section = getattr(card, "verdict", None) or {}
        if not section:
            t = float(getattr(card, "temperature", 1.0) or 1.0)
            rule = getattr(card, "label_rule", None) or {}
            return VerdictRule("head", 1.0 / t, 0.0, 0.5, float(rule.get("threshold_pct", DEFAULT_THRESHOLD_PCT)))
        known = {k: section[k] for k in ("score", "a", "b", "cut", "threshold_pct", "validation") if k in section}
        return VerdictRule(**known)

    @staticmethod
    def at_involvement(op_pct: float, threshold_pct: float, validation: dict[str, Any] | None = None) -> "VerdictRule":
        """Severe when the learned involvement is at least ``op_pct`` % of the lung (a cross-validated choice)."""
        shift = float(involvement_logit(np.array([threshold_pct]), op_pct)[0])  # logit t − logit op
        return VerdictRule("lesion", 1.0, shift, 0.5, threshold_pct, dict(validation or {}, operating_point_pct=op_pct))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        what = {"head": "the classification head", "lesion": "the learned lesion area over the lung field",
                "both": "the classification head and the learned lesion area, averaged"}[self.score]
        op = self.validation.get("operating_point_pct")
        at = f" (learned involvement ≥ {op:.1f} % of the lung)" if op is not None else ""
        return f"P(severe) from {what}; severe when P(severe) ≥ {self.cut:.2f}{at}"

    def raw(self, head_logits: np.ndarray | None, involvement_pct: np.ndarray | None) -> np.ndarray:
        """The uncalibrated score per slice."""
        head = None if head_logits is None else np.asarray(head_logits, np.float64)[:, 1] - np.asarray(
            head_logits, np.float64)[:, 0]
        les = None if involvement_pct is None else involvement_logit(involvement_pct, self.threshold_pct)
        if self.score == "head" or (self.score == "both" and les is None):
            if head is None:
                raise ValueError("this rule scores the classification head, but no head logits were given")
            return head
        if les is None:
            raise ValueError("this rule scores the learned lesion area, but the model gave no lesion map")
        return les if self.score == "lesion" or head is None else (head + les) / 2.0

    def p_severe(self, head_logits: np.ndarray | None, involvement_pct: np.ndarray | None = None) -> np.ndarray:
        return sigmoid(self.a * self.raw(head_logits, involvement_pct) + self.b)

    def verdict(self, p_severe: float) -> str:
        return "severe" if p_severe >= self.cut else "mild"
