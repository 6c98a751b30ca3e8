"""The one model registry: one :class:`ModelSpec` per model kind (builder, defaults, title, paper
reference, order, Compare default), and widths-as-data.

Every network the app shows or trains is created here from a key plus JSON-safe kwargs, so a
checkpoint card (``model_key`` + ``arch``) is enough to rebuild it. This module must not import
``ctmodels.checkpoint`` (checkpoint imports us); :func:`build` takes any card-like object.

Structurally pruned nets (torch-pruning shrinks Conv2d/BatchNorm2d/Linear in place) are stored
as the base key plus ``widths``: only the layers whose shape differs from a fresh base net, with
the numbers that define their shape. :func:`apply_widths` rebuilds those layers at that size.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
import torch.nn as nn

from ctmodels.nets.ghost import ghost_resnet18, ghost_resnet50
from ctmodels.nets.resnet import resnet18, resnet50

__all__ = [
    "MODEL_KEYS",
    "MODEL_INFO",
    "GHOST_DEFAULTS",
    "GHOST_KD_DEFAULTS",
    "ModelInfo",
    "ModelSpec",
    "UnknownModelError",
    "check_key",
    "check_io",
    "weight_sparsity",
    "compare_defaults",
    "register",
    "unregister",
    "create",
    "build",
    "info",
    "resolve_arch",
    "extract_widths",
    "apply_widths",
]

log = logging.getLogger(__name__)

#: Default ``ghost`` config: fused Ghost modules for conv1/conv2/conv3 of every Bottleneck, ratio 2
#: in stages 1-3 and 4 in stage 4. 10.08M params (0.43x the baseline), within the CPU speed goals;
#: ratio 4 in stage 3 too (8.46M) was a little faster but lost 25 points of AUC on the hardest real-CT
#: fold; the paper's literal placement (conv3 of stages 3-4) keeps 0.90x the parameters (docs/models.md).
GHOST_DEFAULTS: dict[str, Any] = {"placement": "full", "stages": [1, 2, 3, 4], "ratio": [2, 2, 2, 4], "dw_size": 3,
                                  "design": "fused"}
#: Default ``ghost_kd`` student: every BasicBlock conv of a ResNet18 is a Ghost module, ratio 2.
GHOST_KD_DEFAULTS: dict[str, Any] = {"stages": [1, 2, 3, 4], "ratio": 2, "dw_size": 3}

# Kwargs every builder takes; they live in the card's own fields (class_names, in_channels).
_IO_KWARGS = ("num_classes", "in_channels")


@dataclass(frozen=True)
class ModelSpec:
    """Everything the product knows about one model kind. Adding a kind is one spec (and its builder):
    the CLI, the Training page, checkpoints, the benchmark and Compare all read the registry."""

    key: str
    title: str
    description: str
    reference: str
    builder: Callable[..., nn.Module]
    defaults: Mapping[str, Any] = field(default_factory=dict)  # builder kwargs a card resolves to
    compare_rank: int | None = None  # position among the models Compare shows by default; None: not by default
    #: builder kwargs a card *without* them was built with (kwargs added after checkpoints existed)
    card_absent: Mapping[str, Any] = field(default_factory=dict)
    #: the kind's own arch rules, after defaults (pruned: resolve its base key, keep its widths)
    resolve: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    #: what a trained net adds to its card's arch when saved: (model, arch, io kwargs) -> arch (pruned: widths)
    complete: Callable[..., dict[str, Any]] | None = None
    #: card fields measured from the saved weights: state dict -> {field: value} (sparse: its sparsity)
    measured: Callable[[Mapping[str, torch.Tensor]], dict[str, Any]] | None = None


#: The registry, in display (and benchmark) order.
_SPECS: dict[str, ModelSpec] = {}


class _LiveKeys(Sequence[str]):
    """The registered keys in order, always current (a kind registered later appears everywhere)."""

    def __getitem__(self, i):  # type: ignore[override]
        return tuple(_SPECS)[i]

    def __len__(self) -> int:
        return len(_SPECS)

    def __contains__(self, key: object) -> bool:
        return key in _SPECS

    def __repr__(self) -> str:
        return repr(tuple(_SPECS))


MODEL_KEYS: Sequence[str] = _LiveKeys()
#: key -> spec (title, description, reference), the same live registry.
MODEL_INFO: Mapping[str, ModelSpec] = _SPECS
ModelInfo = ModelSpec


def register(spec: ModelSpec) -> None:
    """Add a model kind (refuses a key already taken)."""
    if spec.key in _SPECS:
        raise ValueError(f"model key {spec.key!r} is already registered")
    _SPECS[spec.key] = spec


def unregister(key: str) -> None:
    """Remove a model kind (tests that register a throw-away kind)."""
    _SPECS.pop(key, None)


def compare_defaults() -> list[str]:
    """The kinds Compare shows by default, in their order."""
    ranked = [s for s in _SPECS.values() if s.compare_rank is not None]
    return [s.key for s in sorted(ranked, key=lambda s: s.compare_rank)]


class UnknownModelError(ValueError):
    """A model key that is not in the registry (typo, or a checkpoint from a newer version)."""

    def __init__(self, key: object) -> None:
        self.key = key
        super().__init__(f"unknown model key {key!r}; valid keys are: {', '.join(MODEL_KEYS)}")


def _check_key(key: object) -> str:
    if key not in _SPECS:
        raise UnknownModelError(key)
    return str(key)


def info(key: str) -> ModelSpec:
    """What the product says about ``key`` (raises :class:`UnknownModelError`)."""
    return _SPECS[_check_key(key)]


def _build_pruned(*, widths: Mapping[str, list[int]] | None = None, base: str = "baseline", **kw: Any) -> nn.Module:
    if base == "pruned":
        raise ValueError("a pruned net's base must be an unpruned key, not 'pruned'")
    model = create(base, **kw)
    return apply_widths(model, widths or {})


def _resolve_pruned(arch: dict[str, Any]) -> dict[str, Any]:
    """A pruned card is its base key's resolved arch plus the widths that differ from it."""
    base = _check_key(arch.get("base", "baseline"))
    rest = {k: v for k, v in arch.items() if k not in ("base", "widths")}
    return {**resolve_arch(base, rest), "base": base, "widths": dict(arch.get("widths") or {})}


def _complete_pruned(model: nn.Module, arch: dict[str, Any], **io: int) -> dict[str, Any]:
    """The widths torch-pruning left, read off the trained net (unless the card already holds them)."""
    if "widths" in arch:
        return arch
    base = arch.get("base", "baseline")
    base_kw = {k: v for k, v in arch.items() if k not in ("base", "widths", *_IO_KWARGS)}
    return {**arch, "widths": extract_widths(model, base, **base_kw, **io)}


def weight_sparsity(state: Mapping[str, torch.Tensor]) -> float:
    """Fraction of exactly-zero entries among conv/linear weights (ndim >= 2)."""
    total = zeros = 0
    for name, t in state.items():
        if name.endswith("weight") and t.ndim >= 2:
            total += t.numel()
            zeros += int((t == 0).sum())
    return zeros / total if total else 0.0


for _spec in (
    ModelSpec("baseline", "ResNet50 (baseline)",
              "ResNet50 with a 1-channel input and 2 classes; the reference all variants are compared to.",
              "paper 000 Table I row 1", resnet50, compare_rank=3),
    ModelSpec("ghost", "ResNet50 + Ghost modules",
              "ResNet50 whose residual-branch convs are Ghost modules (half the features from cheap depthwise ops).",
              "paper 000 Table I row 4 (ResNet50+GhostNet)", ghost_resnet50, GHOST_DEFAULTS, compare_rank=0,
              card_absent={"design": "v1"}),
    ModelSpec("pruned", "ResNet50, L1 filter-pruned",
              "Trained baseline with whole filters removed by L1-norm structured pruning, then fine-tuned.",
              "paper 000 Table I row 2 (ResNet50+Pruning)", _build_pruned, compare_rank=1,
              resolve=_resolve_pruned, complete=_complete_pruned),
    ModelSpec("kd", "ResNet18 student (KD)",
              "ResNet18 trained to mimic the ResNet50 teacher's softened outputs (T=4).",
              "paper 000 Table I row 3 (ResNet50+KD)", resnet18, compare_rank=2),
    ModelSpec("sparse", "ResNet50, magnitude-sparse",  # same architecture; the key marks unstructured-pruned weights
              "Baseline with the smallest individual weights zeroed; same dense shape, so no dense speed-up.",
              "paper 001 (polynomial-decay magnitude pruning)", resnet50,
              measured=lambda state: {"sparsity": round(weight_sparsity(state), 6)}),
    ModelSpec("ghost_kd", "Ghost-ResNet18 student (KD)",
              "ResNet18 with Ghost modules, distilled from the ResNet50 teacher: the papers' future work.",
              "beyond paper 000 (its stated future work)", ghost_resnet18, GHOST_KD_DEFAULTS),
):
    register(_spec)
del _spec


def check_key(key: object) -> ModelSpec:
    """The one check of a model key (config, Training page, checkpoint card): its spec, or
    :class:`UnknownModelError` naming the valid keys."""
    return info(key)  # type: ignore[arg-type]


def _with_defaults(key: str, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The one merge of a kind's defaults under given kwargs."""
    return {**info(key).defaults, **kwargs}


def check_io(arch: Mapping[str, Any], num_classes: int, in_channels: int) -> None:
    """An arch that names the classes or input channels must agree with the card's own fields."""
    for name, value in (("num_classes", num_classes), ("in_channels", in_channels)):
        if name in arch and int(arch[name]) != value:
            raise ValueError(f"card arch says {name}={arch[name]} but the card's own fields say {value}")


def create(key: str, **kwargs: Any) -> nn.Module:
    """Build a randomly initialised net for ``key``; kwargs override that key's defaults."""
    return info(key).builder(**_with_defaults(key, kwargs))


def resolve_arch(key: str, arch: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Full, JSON-safe builder kwargs for ``key``: defaults filled in, tuples as lists.

    Cards store the resolved form so that changing a default later never changes what an old
    checkpoint rebuilds to. ``num_classes``/``in_channels`` are left out (cards hold them apart).
    """
    spec = info(key)
    arch = _with_defaults(key, {k: v for k, v in dict(arch or {}).items() if k not in _IO_KWARGS})
    if spec.resolve:
        arch = spec.resolve(arch)
    if "stages" in arch:
        arch["stages"] = sorted(int(s) for s in arch["stages"])
    if "widths" in arch:
        arch["widths"] = {str(k): [int(x) for x in v] for k, v in arch["widths"].items()}
    return arch


class CardLike(Protocol):
    """The few card fields :func:`build` needs (see :class:`ctmodels.checkpoint.ModelCard`)."""

    model_key: str
    arch: dict[str, Any]
    class_names: list[str]
    in_channels: int


def build(card: CardLike) -> nn.Module:
    """Rebuild the (untrained) net a card describes; the card alone is enough."""
    kwargs = {**info(card.model_key).card_absent, **(card.arch or {})}
    check_io(kwargs, len(card.class_names), int(card.in_channels))
    return create(card.model_key, **{**kwargs, "num_classes": len(card.class_names), "in_channels": int(card.in_channels)})


# --------------------------------------------------------------------------- widths as data

_SHAPED = (nn.Conv2d, nn.BatchNorm2d, nn.Linear)


def _shape_numbers(m: nn.Module) -> list[int]:
    if isinstance(m, nn.Conv2d):
        return [m.out_channels, m.in_channels, m.groups]
    if isinstance(m, nn.BatchNorm2d):
        return [m.num_features]
    if isinstance(m, nn.Linear):
        return [m.out_features, m.in_features]
    raise TypeError(f"no widths for {type(m).__name__}")


def extract_widths(model: nn.Module, base: str = "baseline", **base_kwargs: Any) -> dict[str, list[int]]:
    """Shape numbers of every Conv2d/BatchNorm2d/Linear that differs from a fresh ``base`` net.

    Conv2d -> [out_channels, in_channels, groups]; BatchNorm2d -> [num_features];
    Linear -> [out_features, in_features]. The reference is built on the meta device (no memory).
    """
    with torch.device("meta"):
        ref = create(base, **base_kwargs)
    ref_modules = dict(ref.named_modules())
    widths: dict[str, list[int]] = {}
    for name, m in model.named_modules():
        if not isinstance(m, _SHAPED):
            continue
        r = ref_modules.get(name)
        if r is None or type(r) is not type(m):
            raise ValueError(
                f"layer {name!r} ({type(m).__name__}) does not exist in a fresh {base!r} net: "
                "widths only describe channel pruning, not other structural changes"
            )
        numbers = _shape_numbers(m)
        if numbers != _shape_numbers(r):
            widths[name] = numbers
    return widths


def _resized(m: nn.Module, numbers: list[int], name: str) -> nn.Module:
    w = getattr(m, "weight", None)
    factory = {"device": w.device, "dtype": w.dtype} if isinstance(w, torch.Tensor) else {}
    if isinstance(m, nn.Conv2d):
        if len(numbers) not in (2, 3):
            raise ValueError(f"widths for conv {name!r} must be [out, in, groups], got {numbers}")
        out_ch, in_ch = numbers[0], numbers[1]
        depthwise = m.groups > 1 and m.groups == m.in_channels == m.out_channels
        groups = numbers[2] if len(numbers) == 3 else (in_ch if depthwise else m.groups)
        if in_ch % groups or out_ch % groups:
            raise ValueError(f"widths for conv {name!r}: channels {out_ch}/{in_ch} not divisible by groups {groups}")
        return nn.Conv2d(
            in_ch,
            out_ch,
            kernel_size=m.kernel_size,
            stride=m.stride,
            padding=m.padding,
            dilation=m.dilation,
            groups=groups,
            bias=m.bias is not None,
            padding_mode=m.padding_mode,
            **factory,
        )
    if isinstance(m, nn.BatchNorm2d):
        (n,) = numbers
        return nn.BatchNorm2d(
            n, eps=m.eps, momentum=m.momentum, affine=m.affine, track_running_stats=m.track_running_stats, **factory
        )
    if isinstance(m, nn.Linear):
        out_f, in_f = numbers
        return nn.Linear(in_f, out_f, bias=m.bias is not None, **factory)
    raise ValueError(f"widths name {name!r}, a {type(m).__name__}; only Conv2d/BatchNorm2d/Linear can be resized")


def apply_widths(model: nn.Module, widths: Mapping[str, list[int]]) -> nn.Module:
    """Replace each named layer by a freshly initialised one of the recorded size (in place).

    Weights are not kept: the caller loads the pruned state dict afterwards.
    """
    for name, numbers in widths.items():
        try:
            old = model.get_submodule(name)
        except AttributeError as exc:
            raise ValueError(f"widths name a layer {name!r} that this net does not have") from exc
        new = _resized(old, [int(x) for x in numbers], name)
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, new)
    return model

