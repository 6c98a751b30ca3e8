"""Run configuration: dataclasses that round-trip through JSON/YAML and validate early.

A bad config (unknown model, missing dataset, bad numbers) must fail before a run folder exists,
with a message a researcher can act on.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from ctmodels.nets import MODEL_KEYS
from ctmodels.nets.registry import UnknownModelError, check_key
from ctmodels.preprocess import Preprocessing
from ctmodels.verdict import DEFAULT_THRESHOLD_PCT

COMMANDS = ("train", "distill", "prune", "cv")
#: What the verdict is made from (``ctmodels.verdict``); 'auto': the lesion area for nets with a lesion head.
VERDICT_SCORES = ("auto", "head", "lesion", "both")
TARGETS = ("label", "involvement")
OPTIMIZERS = ("adamw", "adam", "rmsprop", "sgd")


class ConfigError(ValueError):
    """A configuration that cannot run, explained."""


@dataclass
class DataConfig:
    source: str = "demo"  # a named source ('demo', 'real', 'real-infnet', …; see training.data.prepare) or a folder
    threshold_pct: float = DEFAULT_THRESHOLD_PCT
    excluded_band: list[float] | None = None  # e.g. [20, 30]: slices/cases inside get no label
    label_level: str = "slice"  # 'slice' uses per-slice labels where the dataset has them
    lung_slices_only: bool = True
    split: list[float] = field(default_factory=lambda: [0.5, 0.2, 0.3])  # train/val/test, by patient
    max_slices_per_case: int | None = None
    max_cases: int | None = None  # evenly spaced subset of the cases (quick runs and tests)
    # What the network learns: 'label' (mild/severe) or 'involvement': the slice's involvement as soft
    # labels (odds against the threshold's; training.data.prepare.severe_targets), which keeps how far a slice is
    # from the cut.
    target: str = "label"
    # Patient-grouped cross-validation: cv_folds > 0 makes fold ``cv_fold`` the test split.
    cv_folds: int = 0
    cv_fold: int = 0
    cv_seed: int = 0
    # Leave one source out: that source's patients are the test split (training.data.prepare.SOURCES).
    holdout_source: str = ""


@dataclass
class AugmentConfig:
    enabled: bool = True
    rotation_deg: float = 10.0
    zoom: float = 0.10
    translate: float = 0.05
    brightness: float = 0.10
    contrast: float = 0.10
    hflip: bool = True
    vflip: bool = False
    # Show a training slice masked with probability mask_prob, when the preprocessing masks HU inputs
    # only: 8-bit slices are then also seen with the look HU inputs have (training.data.prepare.Prepared).
    mask_prob: float = 0.0
    # What differs between sources besides window and level (training.data.prepare._source_look), all off at 0:
    # gamma in [1/(1+g), 1+g]; with probability lowres, down- and up-sampled by 1.3-2.5x; with probability
    # blur, a Gaussian blur (sigma 0.3-1.2 px); Gaussian noise with a standard deviation up to ``noise``.
    gamma: float = 0.0
    lowres: float = 0.0
    blur: float = 0.0
    noise: float = 0.0


@dataclass
class OptimConfig:
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9
    epochs: int = 6
    batch_size: int = 32
    scheduler: str = "cosine"  # 'cosine' or 'none'
    early_stopping_patience: int = 0  # 0: off
    balanced_sampling: bool = True
    # With balanced sampling, also weight each slice by 1/count(its source)^source_balance (0: off). The few
    # doctor-masked MedSeg slices are 4 % of the real set; at 0.5 a source's share goes as the root of its size.
    source_balance: float = 0.0
    # Keep an exponential moving average of the weights (and BatchNorm statistics), this decay per step, and
    # validate and save the average instead of the last step's weights (0: off). Runs that differ only in
    # floating-point summation order scored 0.76 and 0.84 on one fold (docs/real_ct.md): the average steadies
    # them. Not used where a step hook edits the weights (pruning schedules).
    ema: float = 0.0
    label_smoothing: float = 0.0
    # Weight of the lesion term (Dice + BCE against the infection mask) for nets with a lesion head
    # (``model_kwargs: {lesion_head: width}``); slices without a mask add nothing to it.
    lesion_weight: float = 1.0


@dataclass
class DistillConfig:
    teacher: str = ""  # checkpoint folder
    temperature: float = 4.0
    alpha: float = 0.5  # weight of the hard-label cross-entropy; (1 - alpha) on the KD term
    # The same split for the lesion map (the masks' Dice + BCE against the teacher's map); None: ``alpha``.
    lesion_alpha: float | None = None


@dataclass
class PruneConfig:
    checkpoint: str = ""  # the trained model to prune
    target_ratio: float = 0.5  # structured: fraction of channels removed in insensitive layers
    steps: int = 3
    sensitivity: bool = True
    min_ratio: float = 0.3  # structured: floor for the most sensitive stages
    finetune_epochs: int = 1  # per step (structured) / total epochs of the schedule (unstructured)
    unstructured: bool = False
    sparsity: float = 0.5  # unstructured: final fraction of zero weights
    power: float = 3.0  # polynomial decay exponent of the sparsity schedule
    # Fine-tune against the unpruned model's outputs (KD with the ``distill`` section's temperature and
    # alpha) as well as the targets: the pruned net then keeps what its parent does on inputs unlike the
    # training slices (HU scans for the real set).
    distill: bool = False


@dataclass
class CVConfig:
    """Patient-grouped k-fold cross-validation of a model-set recipe (see ``training.recipes.cv``)."""

    recipe: str = "real"  # 'real' or 'demo': which set's recipe every fold trains
    split: str = "patients"  # 'patients': k folds of patients; 'sources': leave one source out (training.data.prepare.SOURCES)
    folds: int = 5
    repeats: int = 1  # each repeat reshuffles the patients into new folds (seed + repeat)
    seed: int = 0
    models: list[str] = field(default_factory=lambda: list(MODEL_KEYS))
    quick: bool = False  # the recipe's tiny settings (tests)
    cam: bool = True  # measure where each model's Grad-CAM peaks on held-out severe slices


@dataclass
class RunConfig:
    command: str = "train"
    model: str = "baseline"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    distill: DistillConfig | None = None
    prune: PruneConfig | None = None
    cv: CVConfig | None = None
    preprocessing: dict[str, Any] = field(default_factory=lambda: Preprocessing().to_dict())
    seed: int = 0
    device: str = "auto"  # 'auto', 'cpu', 'cuda'
    amp: bool = True  # CUDA only
    channels_last: bool = True  # CUDA only
    threads: int | None = None
    init: str | None = None  # local ImageNet ResNet weights file (never downloaded)
    name: str | None = None
    notes: str = ""
    verdict: str = "auto"  # see VERDICT_SCORES
    #: Learned involvement (% of lung) at which a lesion verdict turns severe, chosen by the recipe's
    #: cross-validation (``training.recipes.cv``); None: the cut is chosen on the run's validation split.
    verdict_op_pct: float | None = None

    @property
    def pre(self) -> Preprocessing:
        return Preprocessing(**self.preprocessing)

    @property
    def produces(self) -> str:
        """The model kind this run makes (what its card says and the run registry files it under): pruning a
        baseline makes a 'pruned' model, or a 'sparse' one when unstructured."""
        if self.command == "prune":
            return "sparse" if self.prune.unstructured else "pruned"
        return self.model

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict[str, Any]) -> "RunConfig":
        return _from_dict(RunConfig, d)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2))

    @staticmethod
    def load(path: str | Path) -> "RunConfig":
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist")
        try:
            text = p.read_text()
            d = yaml.safe_load(text) if p.suffix.lower() in (".yaml", ".yml") else json.loads(text)
        except (ValueError, yaml.YAMLError) as exc:
            raise ConfigError(f"config file {p.name} is not valid {p.suffix[1:].upper()}: {exc}") from exc
        if not isinstance(d, dict):
            raise ConfigError(f"config file {p.name} must hold a mapping of settings")
        return RunConfig.from_dict(d)

    def _validate_cv(self) -> None:
        _validate_cv_settings(self.cv)

    def validate(self) -> None:
        """Cheap checks that need no data (data checks happen in ``training.data.prepare``)."""
        if self.command not in COMMANDS:
            raise ConfigError(f"unknown command {self.command!r}; choose from {', '.join(COMMANDS)}")
        if self.command == "cv":
            self._validate_cv()
            return
        try:
            check_key(self.model)
        except UnknownModelError as exc:
            raise ConfigError(str(exc)) from exc
        o = self.optim
        if o.optimizer not in OPTIMIZERS:
            raise ConfigError(f"unknown optimiser {o.optimizer!r}; choose from {', '.join(OPTIMIZERS)}")
        if o.epochs < 1 and self.command == "train":
            raise ConfigError("epochs must be at least 1")
        if o.batch_size < 2:
            raise ConfigError("batch size must be at least 2 (BatchNorm needs more than one sample)")
        if not (0 < o.lr < 10):
            raise ConfigError(f"learning rate {o.lr} is out of range")
        if not (0 <= o.ema < 1):
            raise ConfigError(f"the weights' moving average decay {o.ema} must be within [0, 1) (0: off)")
        s = self.data.split
        if len(s) != 3 or any(v < 0 for v in s) or s[0] <= 0 or abs(sum(s) - 1.0) > 1e-6:
            raise ConfigError("split must be three non-negative fractions (train, val, test) summing to 1")
        if not (0 < self.data.threshold_pct < 100):
            raise ConfigError("threshold must be between 0 and 100 % of lung")
        if self.data.label_level not in ("slice", "patient"):
            raise ConfigError("label_level must be 'slice' or 'patient'")
        if self.verdict not in VERDICT_SCORES:
            raise ConfigError(f"unknown verdict score {self.verdict!r}; choose from {', '.join(VERDICT_SCORES)}")
        if self.verdict_op_pct is not None and not (0 < self.verdict_op_pct < 100):
            raise ConfigError("the verdict's operating point must be a learned involvement between 0 and 100 %")
        if self.data.target not in TARGETS:
            raise ConfigError(f"unknown target {self.data.target!r}; choose from {', '.join(TARGETS)}")
        if self.data.cv_folds and not (2 <= self.data.cv_folds <= 20 and 0 <= self.data.cv_fold < self.data.cv_folds):
            raise ConfigError("cross-validation needs 2–20 folds and a fold index below that number")
        if self.data.max_cases is not None and self.data.max_cases < 2:
            raise ConfigError("max_cases must be at least 2")
        pre = self.pre
        if not (32 <= pre.size <= 512):
            raise ConfigError(f"image size {pre.size} must be between 32 and 512 pixels")
        if self.command == "distill":
            if not self.distill or not self.distill.teacher:
                raise ConfigError("distillation needs a teacher checkpoint (--teacher)")
            d = self.distill
            lesion_alpha = d.alpha if d.lesion_alpha is None else d.lesion_alpha
            if d.temperature <= 0 or not (0 <= d.alpha <= 1 and 0 <= lesion_alpha <= 1):
                raise ConfigError("temperature must be > 0 and alpha (and lesion_alpha) within [0, 1]")
        if self.command == "prune":
            p = self.prune
            if not p or not p.checkpoint:
                raise ConfigError("pruning needs the checkpoint of a trained model (--from)")
            if not p.unstructured and not (0 < p.target_ratio < 0.95):
                raise ConfigError("structured pruning ratio must be within (0, 0.95)")
            if p.unstructured and not (0 < p.sparsity < 1):
                raise ConfigError("sparsity must be within (0, 1)")
            if p.steps < 1:
                raise ConfigError("pruning needs at least one step")


def _validate_cv_settings(cv: CVConfig | None) -> None:
    if cv is None:
        raise ConfigError("cross-validation needs its settings (folds, repeats, models)")
    if cv.recipe not in ("real", "demo"):
        raise ConfigError(f"unknown recipe {cv.recipe!r}; choose 'real' or 'demo'")
    if cv.split not in ("patients", "sources"):
        raise ConfigError(f"unknown split {cv.split!r}; choose 'patients' (k-fold) or 'sources' (leave one source out)")
    if cv.split == "sources" and cv.recipe != "real":
        raise ConfigError("leave-one-source-out needs the real recipe (the phantoms are one source)")
    if not (2 <= cv.folds <= 20):
        raise ConfigError("cross-validation needs 2–20 folds")
    if not (1 <= cv.repeats <= 20):
        raise ConfigError("repeats must be within 1–20")
    unknown = [m for m in cv.models if m not in MODEL_KEYS]
    if unknown or not cv.models:
        raise ConfigError(f"pick models among {', '.join(MODEL_KEYS)}" + (f" (unknown: {unknown})" if unknown else ""))


def _from_dict(cls: type, d: dict[str, Any]) -> Any:
    if not isinstance(d, dict):
        raise ConfigError(f"expected a mapping for {cls.__name__}, got {type(d).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = set(d) - set(known)
    if unknown:
        raise ConfigError(f"unknown setting(s) {sorted(unknown)} in {cls.__name__}")
    kwargs = {}
    for name, value in d.items():
        sub = _NESTED.get((cls.__name__, name))
        kwargs[name] = _from_dict(sub, value) if sub and value is not None else value
    try:
        obj = cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(str(exc)) from exc
    return obj


_NESTED = {
    ("RunConfig", "data"): DataConfig,
    ("RunConfig", "augment"): AugmentConfig,
    ("RunConfig", "optim"): OptimConfig,
    ("RunConfig", "distill"): DistillConfig,
    ("RunConfig", "prune"): PruneConfig,
    ("RunConfig", "cv"): CVConfig,
}


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``override`` into a copy of ``base`` (for presets + command-line flags)."""
    out = json.loads(json.dumps(base))
    for k, v in override.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out

