"""Self-describing checkpoints: a folder with ``weights.safetensors`` + ``card.json``.

Why: a checkpoint must be loadable by the app with nothing but ``ctmodels`` (no training code,
no pickles, which can run arbitrary code), and must say everything needed to use it: which net
(``model_key`` + ``arch``, incl. pruned channel widths), how to preprocess (window, size,
normalisation), what the classes are, how it was made, and how it measured.

Atomic save: the folder is built beside the destination and swapped in by renames
(:mod:`ctmodels.atomic`); :func:`load` undoes a save that a crash interrupted before its commit point.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import logging
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import torch
import torch.nn as nn

from ctmodels.atomic import OLD_TAG, recover_dir, replace_dir
from ctmodels.nets.registry import MODEL_KEYS, UnknownModelError, build, check_io, check_key, resolve_arch
from ctmodels.preprocess import DEFAULT_NORMALIZATION, PREPROCESS_VERSION

__all__ = [
    "FORMAT_VERSION",
    "WEIGHTS_NAME",
    "CARD_NAME",
    "PICKLE_SUFFIXES",
    "ModelCard",
    "CheckpointError",
    "PickledCheckpointError",
    "UnsafeCheckpointPathError",
    "CheckpointNotFoundError",
    "CardError",
    "UnknownModelKeyError",
    "ShapeMismatchError",
    "IntegrityError",
    "save",
    "load",
    "read_card",
    "checkpoint_id",
    "is_checkpoint",
    "checkpoints_in",
    "outdated_inputs",
]

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
WEIGHTS_NAME = "weights.safetensors"
CARD_NAME = "card.json"
PICKLE_SUFFIXES = frozenset({".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin"})

_PICKLE_MESSAGE = (
    "pickled checkpoints are not loaded because they can run arbitrary code; convert to safetensors "
    "(a checkpoint folder with weights.safetensors and card.json, written by ctmodels.checkpoint.save)"
)


# --------------------------------------------------------------------------- errors


class CheckpointError(Exception):
    """A checkpoint that cannot be used; ``str(error)`` is written for the person who picked it."""

    kind = "checkpoint"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class PickledCheckpointError(CheckpointError):
    """A .pt/.pth/.pkl/.ckpt/.bin file: refused, never unpickled."""

    kind = "pickle"


class UnsafeCheckpointPathError(CheckpointError):
    """The card names a weights file outside its own folder (absolute path, '..', or a link out)."""

    kind = "unsafe-path"


class CheckpointNotFoundError(CheckpointError):
    """The folder, its card or its weights file is missing."""

    kind = "missing"


class CardError(CheckpointError):
    """card.json is unreadable or describes something we cannot build."""

    kind = "bad-card"


class UnknownModelKeyError(CardError):
    """The card's model_key is not one this version knows."""

    kind = "unknown-model"


class ShapeMismatchError(CheckpointError):
    """The weights do not fit the net the card describes (names the first offending layer)."""

    kind = "shape-mismatch"

    def __init__(self, message: str, layer: str | None = None) -> None:
        super().__init__(message)
        self.layer = layer


class IntegrityError(CheckpointError):
    """weights.safetensors does not match the SHA-256 recorded in its card (damaged or swapped)."""

    kind = "hash-mismatch"


# --------------------------------------------------------------------------- card


def _lung_window() -> dict[str, float]:
    return {"level": -600.0, "width": 1500.0}


@dataclass
class ModelCard:
    """Everything needed to rebuild, feed and judge a checkpoint; stored as card.json."""

    model_key: str
    arch: dict[str, Any] = field(default_factory=dict)
    input_size: int = 224
    in_channels: int = 1
    window: dict[str, float] = field(default_factory=_lung_window)
    normalization: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_NORMALIZATION))
    preprocessing: dict[str, Any] = field(default_factory=lambda: {"clahe": False, "roi_crop": False})
    class_names: list[str] = field(default_factory=lambda: ["mild", "severe"])
    temperature: float = 1.0
    #: How outputs become P(severe) and a verdict (``ctmodels.verdict.VerdictRule``: score, calibration,
    #: the cut chosen on validation data and how it did there). Empty: the head, temperature, P ≥ 0.5.
    verdict: dict[str, Any] = field(default_factory=dict)
    #: How a lesion head's map is drawn: ``cut``, the probability at which it marks lesion, chosen on validation
    #: data (the best Dice against the masks; ``ctmodels.preprocess.drawn_map``), and how it did there. Empty: 0.5.
    lesion_map: dict[str, Any] = field(default_factory=dict)
    #: The verdict's rule: threshold (% of lung involved), excluded band, and what was learned
    #: ('label', or 'involvement' as soft targets; training.data.prepare.severe_targets).
    label_rule: dict[str, Any] = field(default_factory=dict)
    #: What the model learned from: source key, title, synthetic?, HU or 8-bit, slices and patients.
    trained_on: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    data_fingerprint: str = ""
    parent_run: str | None = None
    parent_checkpoint: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    sparsity: float | None = None
    versions: dict[str, str] = field(default_factory=dict)
    created: str = ""
    format_version: int = FORMAT_VERSION
    notes: str = ""
    weights_file: str = WEIGHTS_NAME
    weights_sha256: str = ""
    #: Keys from a newer card format that this version does not know; written back unchanged.
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def map_cut(self) -> float:
        """The lesion probability at which its map marks lesion (``lesion_map``; drawn at 0.5)."""
        return float((self.lesion_map or {}).get("cut", 0.5))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; ``extra`` keys go back to the top level where they came from."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        d = json.loads(json.dumps(d, default=_json_default))
        for k, v in self.extra.items():
            d.setdefault(k, v)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelCard:
        """Parse a card dict; unknown keys (newer versions) are kept in ``extra``."""
        if not isinstance(data, dict):
            raise CardError("card.json must hold a JSON object")
        if not isinstance(data.get("model_key"), str):
            raise CardError("card.json has no model_key, so the network cannot be rebuilt")
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {k: v for k, v in data.items() if k in names}
        extra = dict(data.get("extra") or {}) if isinstance(data.get("extra"), dict) else {}
        extra.update({k: v for k, v in data.items() if k not in names and k != "extra"})
        try:
            card = cls(**known, extra=extra)
            card.input_size = int(card.input_size)
            card.in_channels = int(card.in_channels)
            card.temperature = float(card.temperature)
            card.format_version = int(card.format_version)
            card.class_names = [str(c) for c in card.class_names]
        except (TypeError, ValueError) as exc:
            raise CardError(f"card.json has a field of the wrong type: {exc}") from exc
        if len(card.class_names) < 2:
            raise CardError("card.json must name at least two classes")
        if card.format_version > FORMAT_VERSION:
            log.warning(
                "card format %s is newer than this version understands (%s); loading what it knows",
                card.format_version,
                FORMAT_VERSION,
            )
        return card

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> ModelCard:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CardError(f"card.json is not valid JSON ({exc.msg}, line {exc.lineno})") from exc
        return cls.from_dict(data)


def _json_default(o: Any) -> Any:
    if hasattr(o, "item") and callable(o.item) and getattr(o, "ndim", 0) == 0:
        return o.item()  # numpy / torch scalars in metrics
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, (set, frozenset)):
        return sorted(o)
    if isinstance(o, os.PathLike):
        return os.fspath(o)
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


def _versions() -> dict[str, str]:
    import safetensors
    import torchvision

    import ctmodels

    return {
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "safetensors": safetensors.__version__,
        "ctmodels": ctmodels.__version__,
        "preprocess": str(PREPROCESS_VERSION),  # what prepared the inputs it learned from (``outdated_inputs``)
        "python": platform.python_version(),
    }


def outdated_inputs(card: ModelCard) -> str:
    """Why this model would now be fed other inputs than it learned from ("" if not, or if its card predates the
    record): a preprocessing change (``ctmodels.preprocess.PREPROCESS_VERSION``) moves what every slice looks like
    to the network, and the model's verdicts with it, until it is retrained."""
    was = (card.versions or {}).get("preprocess")
    if was is None or str(was) == str(PREPROCESS_VERSION):
        return ""
    return f"it learned from inputs prepared by preprocessing v{was}; this version prepares v{PREPROCESS_VERSION}"


# --------------------------------------------------------------------------- state dicts


def _export_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Contiguous CPU copies (no shared storage, which safetensors refuses).

    ``torch.nn.utils.prune`` re-parametrisation (``w_orig`` + ``w_mask``) is folded into the
    plain ``w`` so a sparse net saves as the architecture its card describes.
    """
    raw = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    for name, t in raw.items():
        if name.endswith("_mask") and name[: -len("_mask")] + "_orig" in raw:
            continue
        if name.endswith("_orig") and name[: -len("_orig")] + "_mask" in raw:
            base = name[: -len("_orig")]
            t = t * raw[base + "_mask"]
            name = base
        out[name] = t.detach().to("cpu").contiguous().clone()
    return out


def _check_shapes(expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor], where: str) -> None:
    """Raise ShapeMismatchError naming the first layer that does not fit."""
    for name, ref in expected.items():
        if name not in found:
            raise ShapeMismatchError(
                f"{where}: layer {name!r} is missing from the weights, so they do not belong to this network",
                layer=name,
            )
        if tuple(found[name].shape) != tuple(ref.shape):
            raise ShapeMismatchError(
                f"{where}: layer {name!r} has shape {list(found[name].shape)} in the weights but the card's "
                f"network expects {list(ref.shape)}; the weights and card.json do not belong together",
                layer=name,
            )
    unexpected = [n for n in found if n not in expected]
    if unexpected:
        raise ShapeMismatchError(
            f"{where}: the weights hold {len(unexpected)} tensor(s) the card's network does not have "
            f"(first: {unexpected[0]!r})",
            layer=unexpected[0],
        )


def _meta_model(card: ModelCard) -> nn.Module:
    """The card's net on the meta device: shapes only, no memory, no init cost."""
    try:
        with torch.device("meta"):
            return build(card)
    except UnknownModelError as exc:
        raise UnknownModelKeyError(
            f"this checkpoint is a {card.model_key!r} model, which this version does not know "
            f"(known: {', '.join(MODEL_KEYS)}); update the app or pick another checkpoint"
        ) from exc
    except (TypeError, ValueError, KeyError) as exc:
        raise CardError(f"card.json describes a network that cannot be built: {exc}") from exc


# --------------------------------------------------------------------------- save


def _write_file(path: Path, data: bytes) -> None:
    path.write_bytes(data)  # replace_dir fsyncs every file before its commit


def _prepare_card(model: nn.Module, card: ModelCard, state: dict[str, torch.Tensor]) -> ModelCard:
    card = ModelCard.from_dict(card.to_dict())  # a private copy; the caller's card is untouched
    try:
        spec = check_key(card.model_key)
    except UnknownModelError as exc:
        raise UnknownModelKeyError(f"cannot save an unknown model key {card.model_key!r}") from exc
    arch = dict(card.arch)
    if spec.complete:
        arch = spec.complete(model, arch, num_classes=card.num_classes, in_channels=card.in_channels)
    try:
        check_io(arch, card.num_classes, card.in_channels)
    except ValueError as exc:
        raise CardError(str(exc)) from exc
    card.arch = resolve_arch(card.model_key, arch)
    for name, value in (spec.measured(state) if spec.measured else {}).items():
        if getattr(card, name) is None:
            setattr(card, name, value)
    card.versions = card.versions or _versions()
    card.created = card.created or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    card.format_version = FORMAT_VERSION
    card.weights_file = WEIGHTS_NAME
    return card


def save(model: nn.Module, card: ModelCard, folder: str | Path) -> Path:
    """Write ``model`` + ``card`` atomically as checkpoint folder ``folder``; returns its path.

    Refuses (before writing anything) a model whose tensors do not fit the net its card
    describes, so a checkpoint that cannot be loaded is never written. The caller's card is not
    modified; the saved card (with hash, versions, resolved arch) is returned by :func:`read_card`.
    """
    from safetensors.torch import save as st_save

    folder = Path(folder)
    if folder.suffix.lower() in PICKLE_SUFFIXES or folder.suffix.lower() == ".safetensors":
        raise CheckpointError(f"a checkpoint is a folder, not a {folder.suffix} file: pick a folder name")
    state = _export_state_dict(model)
    card = _prepare_card(model, card, state)
    _check_shapes(_meta_model(card).state_dict(), state, "cannot save")

    # One metadata key only: safetensors writes a multi-key metadata map in hash order, which would
    # make identical weights hash differently from save to save (and break checkpoint_id).
    blob = st_save(state, metadata={"format": "pt"})
    card.weights_sha256 = hashlib.sha256(blob).hexdigest()
    card_bytes = card.to_json().encode("utf-8")

    if folder.exists():
        if not folder.is_dir():
            raise CheckpointError(f"{folder} exists and is a file; a checkpoint is a folder")
        entries = {p.name for p in folder.iterdir()}
        if entries and CARD_NAME not in entries:
            raise CheckpointError(
                f"will not replace {folder}: it holds other files and is not a checkpoint folder"
            )
        dropped = entries - {CARD_NAME, WEIGHTS_NAME}
        if dropped:
            log.warning("replacing checkpoint %s drops extra files: %s", folder, sorted(dropped))

    def fill(tmp: Path) -> None:
        _write_file(tmp / WEIGHTS_NAME, blob)
        _write_file(tmp / CARD_NAME, card_bytes)

    replace_dir(folder, fill)
    log.info("saved %s checkpoint to %s (sha256 %s)", card.model_key, folder, card.weights_sha256[:12])
    return folder


# --------------------------------------------------------------------------- load


def _checkpoint_folder(path: str | Path) -> Path:
    """The checkpoint folder ``path`` points at; refuses pickles before touching their bytes."""
    p = Path(path)
    if p.suffix.lower() in PICKLE_SUFFIXES and not p.is_dir():
        raise PickledCheckpointError(f"{p.name}: {_PICKLE_MESSAGE}")
    if p.is_file():
        if p.name == CARD_NAME or (p.parent / CARD_NAME).is_file():
            return p.parent
        raise CheckpointNotFoundError(
            f"{p.name} is a single file; a checkpoint is a folder with {WEIGHTS_NAME} and {CARD_NAME}"
        )
    recover_dir(p, lambda old: (old / CARD_NAME).is_file())
    if not p.is_dir():
        raise CheckpointNotFoundError(f"checkpoint folder not found: {p}")
    if not (p / CARD_NAME).is_file():
        files = [q for q in p.iterdir() if q.is_file()]
        if files and all(q.suffix.lower() in PICKLE_SUFFIXES for q in files):
            raise PickledCheckpointError(f"{p.name} holds only {files[0].suffix} files: {_PICKLE_MESSAGE}")
        raise CheckpointNotFoundError(
            f"{p.name} has no {CARD_NAME}, so it is not a checkpoint (or was not saved completely)"
        )
    return p


def read_card(folder: str | Path) -> ModelCard:
    """The card of a checkpoint folder, without loading any weights."""
    p = _checkpoint_folder(folder)
    try:
        text = (p / CARD_NAME).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CardError(f"cannot read {CARD_NAME} in {p.name}: {exc}") from exc
    return ModelCard.from_json(text)


def is_checkpoint(folder: str | Path) -> bool:
    """Whether ``folder`` is a checkpoint folder (it holds its card); reads and changes nothing."""
    p = Path(folder)
    return p.is_dir() and (p / CARD_NAME).is_file()


def checkpoints_in(root: str | Path) -> list[Path]:
    """The checkpoint folders directly under ``root``, sorted by name (none when ``root`` is missing).

    Hidden folders are skipped: a save or publish in progress (``.<name>.tmp-…``), a folder set aside
    by one (``.<name>.old-…``). A checkpoint that a crash left set aside mid-replace is first put back,
    as :func:`load` would do, so it is listed under its own name.
    """
    root = Path(root)
    if not root.is_dir():
        return []
    for p in list(root.iterdir()):
        if p.name.startswith(".") and OLD_TAG in p.name and p.is_dir():
            dest = root / p.name[1:].rsplit(OLD_TAG, 1)[0]
            if not dest.exists():
                recover_dir(dest, is_checkpoint)
    return sorted(p for p in root.iterdir() if not p.name.startswith(".") and is_checkpoint(p))


def _weights_path(folder: Path, card: ModelCard) -> Path:
    """The card's weights file, refused unless it is a plain file name inside ``folder``."""
    name = card.weights_file or WEIGHTS_NAME
    if not isinstance(name, str):
        raise CardError("card.json weights_file must be a file name")
    pure_posix, pure_win = PurePosixPath(name), PureWindowsPath(name)
    if (
        pure_posix.is_absolute()
        or pure_win.is_absolute()
        or pure_win.drive
        or ".." in pure_posix.parts
        or ".." in pure_win.parts
    ):
        raise UnsafeCheckpointPathError(
            f"card.json points to weights at {name!r}, outside its own folder; refused "
            "(a checkpoint must carry its weights inside its folder)"
        )
    if PurePosixPath(name).suffix.lower() in PICKLE_SUFFIXES:
        raise PickledCheckpointError(f"card.json names {name!r}: {_PICKLE_MESSAGE}")
    path = folder / name
    root = folder.resolve()
    resolved = path.resolve()
    if resolved != root and root not in resolved.parents:
        raise UnsafeCheckpointPathError(
            f"card.json weights {name!r} lead outside the checkpoint folder (through a link); refused"
        )
    if not path.is_file():
        raise CheckpointNotFoundError(f"{folder.name} has a card but its weights file {name!r} is missing")
    return path


def load(folder: str | Path, *, device: str | torch.device = "cpu") -> tuple[nn.Module, ModelCard]:
    """Rebuild the net from the card alone, load the verified weights strictly, return it in eval mode."""
    from safetensors import SafetensorError
    from safetensors.torch import load as st_load

    p = _checkpoint_folder(folder)
    card = read_card(p)
    blob = _weights_path(p, card).read_bytes()
    digest = hashlib.sha256(blob).hexdigest()
    if card.weights_sha256:
        if digest != card.weights_sha256.lower():
            raise IntegrityError(
                f"{p.name}: the weights file does not match the checksum in its card (damaged, or swapped "
                "for other weights); refused"
            )
    else:
        log.warning("%s: card has no weights_sha256; weights not verified", p)
    try:
        state = st_load(blob)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{p.name}: weights.safetensors is damaged or not a safetensors file ({exc})") from exc

    # Built on meta and filled by assignment: no random-init cost for a net about to be overwritten.
    model = _meta_model(card)
    _check_shapes(model.state_dict(), state, p.name)
    model.load_state_dict(state, strict=True, assign=True)
    leftover = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if leftover:  # a module with non-persistent buffers: fall back to a real build
        model = build(card)
        model.load_state_dict(state, strict=True)
    model.to(device)
    model.eval()
    return model, card


def checkpoint_id(folder: str | Path) -> str:
    """Short stable id for caches: changes when weights or anything that changes predictions does.

    Hash of the weights' SHA-256 plus the card fields that affect outputs (arch, preprocessing,
    window, normalisation, classes, temperature, verdict rule, map cut), not dates, metrics or notes.
    """
    card = read_card(folder)
    keyed = {
        "weights_sha256": card.weights_sha256,
        "model_key": card.model_key,
        "arch": card.arch,
        "input_size": card.input_size,
        "in_channels": card.in_channels,
        "window": card.window,
        "normalization": card.normalization,
        "preprocessing": card.preprocessing,
        "class_names": card.class_names,
        "temperature": card.temperature,
    }
    if card.verdict:  # cards written before verdict rules keep their ids (and their caches)
        keyed["verdict"] = card.verdict
    if card.lesion_map:  # where the map is drawn (likewise)
        keyed["lesion_map"] = card.lesion_map
    text = json.dumps(keyed, sort_keys=True, default=_json_default)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
