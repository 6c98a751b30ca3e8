"""The one measurement engine: what a compression really buys on this host. :func:`measure` takes
loaded models and runtimes and returns a :class:`Measurement` (parameters dense and non-zero, size
on disk, MACs, latency p50/p90 per batch size, throughput, peak memory, the settings each runtime
ran with); the Efficiency page and ``make bench`` both call it and keep only their own widgets /
report. The latest measurement of this host is kept (:func:`save_latest` / :func:`latest`) so the
page opens with it.

Each runtime runs the way a deployment would (:data:`RUNTIME_SETTINGS`): PyTorch eager with
BatchNorm folded into the convs and channels-last tensors (oneDNN's fast layout), ONNX Runtime with
its default session options (all graph optimisations, intra-op threads = cores, spinning on).

Timing visits every model/runtime in a rotated order, several rounds, so slow drift of a shared
machine hits all alike. Each visit first pauses (0.2 s) and makes one untimed call: the previous
runtime's worker threads (OpenMP, ORT) keep spinning for a while after their last call, and timing
right after a switch measures that contention, not the model (measured: kd int8 8.3 ms interleaved
without the pause, 2.8 ms alone). Report medians and ratios to the baseline measured in the same run.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .atomic import write_text_atomic
from .export import OrtPredictor, export_onnx, quantize_int8
from .inference import LoadedModel
from .nets.lesion import LesionOutputs
from .workspace import workspace_dir

log = logging.getLogger(__name__)

RUNTIMES = ("eager_cpu", "eager_cpu_lesion", "ort_fp32", "ort_int8", "cuda_eager", "cuda_amp")
RUNTIME_TITLES = {
    "eager_cpu": "PyTorch eager, CPU",
    "eager_cpu_lesion": "PyTorch eager, CPU, with the lesion map",
    "ort_fp32": "ONNX Runtime fp32, CPU",
    "ort_int8": "ONNX Runtime int8 (static QDQ), CPU",
    "cuda_eager": "PyTorch eager, CUDA",
    "cuda_amp": "PyTorch AMP, CUDA",
}

#: How each runtime runs (shown on the Efficiency page and in the bench report).
RUNTIME_SETTINGS = {
    "eager_cpu": "torch.inference_mode; BatchNorm folded into convs (torch.fx fuse); channels-last; "
                 "torch threads = cores",
    "eager_cpu_lesion": "as eager_cpu, one pass giving the verdict logits and the lesion map (models with a "
                        "lesion head only): what the head costs in latency",
    "ort_fp32": "onnxruntime CPUExecutionProvider, default session options: ORT_ENABLE_ALL graph "
                "optimisations, intra-op threads = cores, spinning on; torch.onnx.export opset 17",
    "ort_int8": "as ort_fp32, static QDQ int8 (U8 activations, S8 per-channel weights), 64 calibration "
                "slices of the model's own training data",
    "cuda_eager": "torch.inference_mode, channels-last, fp32",
    "cuda_amp": "torch.inference_mode, channels-last, autocast bf16 (fp16 where bf16 is unsupported)",
}


def available_runtimes() -> list[str]:
    base = ["eager_cpu", "eager_cpu_lesion", "ort_fp32", "ort_int8"]
    return base + (["cuda_eager", "cuda_amp"] if torch.cuda.is_available() else [])


def host_info() -> dict[str, str | int | float]:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((l.split(":", 1)[1].strip() for l in fh if l.startswith("model name")), cpu)
    except OSError:
        pass
    import onnxruntime

    info: dict[str, str | int | float] = {
        "cpu": cpu or "unknown", "cores": os.cpu_count() or 1, "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(), "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
        "platform": platform.platform(terse=True),
    }
    try:
        import psutil

        info["ram_gb"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        pass
    info["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return info


def device_tag() -> str:
    """Identifies the hardware a measurement belongs to."""
    h = host_info()
    return f"{h['cpu']}|{h['cores']}|{h['gpu']}".replace("/", "_")


@dataclass
class StaticStats:
    model: str
    key: str
    params: int
    nonzero_params: int
    macs: int
    size_mb: float  # safetensors fp32 on disk
    onnx_fp32_mb: float | None = None
    onnx_int8_mb: float | None = None
    head_params: int = 0  # of ``params``: the lesion head's (0 without one)
    head_macs: int = 0  # added to ``macs`` (the verdict's pass) when the lesion map is computed too


def static_stats(lm: LoadedModel, size: int = 224) -> StaticStats:
    import torch_pruning as tp

    params = sum(p.numel() for p in lm.model.parameters())
    nonzero = sum(int((p != 0).sum()) for p in lm.model.parameters())
    x = torch.zeros(1, 1, size, size)
    macs, _ = tp.utils.count_ops_and_params(lm.model.cpu().eval(), x)
    head_params = head_macs = 0
    if lm.has_lesion_map:
        head_params = sum(p.numel() for p in lm.model.lesion_head.parameters())
        head_macs = int(tp.utils.count_ops_and_params(LesionOutputs(lm.model), x)[0]) - int(macs)
    weights = lm.folder / lm.card.weights_file
    return StaticStats(lm.name, lm.key, params, nonzero, int(macs), round(weights.stat().st_size / 2**20, 2),
                       head_params=head_params, head_macs=head_macs)


@dataclass
class Timing:
    model: str
    runtime: str
    size: int
    batch: int
    p50_ms: float
    p90_ms: float
    mean_ms: float
    n: int
    images_per_s: float
    peak_mem_mb: float | None = None
    measured: str = ""


Fn = Callable[[np.ndarray], object]


def artifacts_dir(root: Path, lm: LoadedModel) -> Path:
    return root / lm.ckpt_id


def onnx_paths(root: Path, lm: LoadedModel) -> tuple[Path, Path]:
    d = artifacts_dir(root, lm)
    return d / "model.fp32.onnx", d / "model.int8.onnx"


def ensure_onnx(lm: LoadedModel, root: Path, calibration: np.ndarray | None, int8: bool) -> tuple[Path, Path | None]:
    """Export (and quantise) once per checkpoint; cached under ``root/<checkpoint id>/``."""
    fp32, q8 = onnx_paths(root, lm)
    if not fp32.is_file():
        export_onnx(lm.model, fp32, lm.pre.size)
    if int8 and not q8.is_file():
        if calibration is None:
            raise ValueError("int8 quantisation needs calibration slices")
        quantize_int8(fp32, q8, calibration)
    return fp32, (q8 if int8 else None)


def inference_ready(model: torch.nn.Module) -> torch.nn.Module:
    """A CPU copy for serving: BatchNorm folded into the preceding convs, channels-last weights.

    Both are what a CPU deployment does and they change no output beyond float rounding; the copy
    leaves the app's model (Grad-CAM hooks, training) untouched. A net torch.fx cannot trace is
    served unfused.
    """
    from torch.fx.experimental.optimization import fuse

    model = copy.deepcopy(model).cpu().eval()
    try:
        model = fuse(model)
    except Exception as exc:  # a net fx cannot trace still runs, only unfused
        log.warning("BatchNorm folding skipped (%s): timing the unfused net", exc)
    return model.to(memory_format=torch.channels_last)


def make_runner(lm: LoadedModel, runtime: str, root: Path, calibration: np.ndarray | None, threads: int) -> Fn:
    """A callable taking a normalised float32 batch (N, 1, S, S), running as :data:`RUNTIME_SETTINGS` says."""
    if runtime in ("eager_cpu", "eager_cpu_lesion"):
        if runtime == "eager_cpu_lesion" and not lm.has_lesion_map:
            raise ValueError("no lesion head")
        model = inference_ready(lm.model if runtime == "eager_cpu" else LesionOutputs(lm.model))

        def run_eager(x: np.ndarray) -> object:
            with torch.inference_mode():
                return model(torch.from_numpy(x).contiguous(memory_format=torch.channels_last))
        return run_eager
    if runtime in ("ort_fp32", "ort_int8"):
        fp32, q8 = ensure_onnx(lm, root, calibration, runtime == "ort_int8")
        return OrtPredictor(q8 if runtime == "ort_int8" else fp32, threads)
    if runtime in ("cuda_eager", "cuda_amp"):
        if not torch.cuda.is_available():
            raise RuntimeError("no CUDA device")
        model = copy.deepcopy(lm.model).cuda().eval().to(memory_format=torch.channels_last)
        amp = runtime == "cuda_amp"
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16

        def run_cuda(x: np.ndarray) -> object:
            t = torch.from_numpy(x).cuda(non_blocking=True).contiguous(memory_format=torch.channels_last)
            with torch.inference_mode(), torch.autocast("cuda", dtype=dtype, enabled=amp):
                out = model(t)
            torch.cuda.synchronize()
            return out
        return run_cuda
    raise ValueError(f"unknown runtime {runtime!r}")


def interleaved(
    runners: dict[tuple[str, str], Fn], size: int, batch: int = 1, warmup: int = 3, repeats: int = 20,
    progress: Callable[[float, str], None] | None = None, rng_seed: int = 0, per_visit: int = 5,
    settle_s: float = 0.2,
) -> dict[tuple[str, str], Timing]:
    """Time every runner on the same input: ``warmup`` untimed calls each, then rounds that visit all
    runners in a rotated order, each visit a pause of ``settle_s``, one untimed call and up to
    ``per_visit`` timed ones, until every runner has ``repeats`` timings (module doc: why)."""
    x = np.random.default_rng(rng_seed).standard_normal((batch, 1, size, size)).astype(np.float32)
    keys = list(runners)
    times: dict[tuple[str, str], list[float]] = {k: [] for k in keys}
    per_visit = max(1, min(per_visit, repeats))
    rounds = -(-repeats // per_visit)
    total = len(keys) * (warmup + rounds * (per_visit + 1))
    done = 0

    def tick(k: tuple[str, str]) -> None:
        nonlocal done
        done += 1
        if progress:
            progress(min(done / total, 1.0), f"{k[0]} · {RUNTIME_TITLES.get(k[1], k[1])} · batch {batch}")

    for k in keys:
        for _ in range(warmup):
            runners[k](x)
            tick(k)
    for r in range(rounds):
        for k in keys[r % len(keys):] + keys[: r % len(keys)]:
            time.sleep(settle_s)  # the last runtime's threads stop spinning
            runners[k](x)  # the visit's untimed call
            tick(k)
            for _ in range(min(per_visit, repeats - len(times[k]))):
                t0 = time.perf_counter()
                runners[k](x)
                times[k].append((time.perf_counter() - t0) * 1000.0)
                tick(k)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
    out = {}
    for k, ts in times.items():
        p50 = statistics.median(ts)
        out[k] = Timing(k[0], k[1], size, batch, round(p50, 3), round(float(np.percentile(ts, 90)), 3),
                        round(statistics.fmean(ts), 3), len(ts), round(batch * 1000.0 / p50, 2), measured=stamp)
    return out


def peak_memory_mb(lm: LoadedModel, runtime: str, size: int, batch: int = 1) -> float | None:
    """CUDA: allocator peak of one forward. CPU: weights + the largest layer output (an estimate)."""
    x = torch.zeros(batch, 1, size, size)
    if runtime.startswith("cuda") and torch.cuda.is_available():
        import copy

        model = copy.deepcopy(lm.model).cuda().eval()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        with torch.inference_mode():
            model(x.cuda())
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() / 2**20
        del model
        torch.cuda.empty_cache()
        return round(peak, 1)
    if runtime != "eager_cpu":
        return None  # (eager_cpu_lesion: the same weights; its extra activations are small at these sizes)
    biggest = [0]

    def hook(_m, _i, out):
        if torch.is_tensor(out):
            biggest[0] = max(biggest[0], out.numel() * out.element_size())

    hs = [m.register_forward_hook(hook) for m in lm.model.modules() if not list(m.children())]
    try:
        with torch.inference_mode():
            lm.model.cpu().eval()(x)
    finally:
        for h in hs:
            h.remove()
    weights = sum(p.numel() * p.element_size() for p in lm.model.parameters())
    return round((weights + 3 * biggest[0]) / 2**20, 1)


@dataclass
class Measurement:
    """One run of the engine: what every model costs on this host, per runtime and batch size."""

    host: dict[str, Any]
    size: int
    repeats: int
    runtimes: list[str]
    settings: dict[str, str]
    statics: dict[str, StaticStats]  # by model name
    timings: list[Timing]
    keys: dict[str, str]  # model name -> registry key
    checkpoints: dict[str, str]  # model name -> checkpoint id
    accuracy: dict[str, float | None]  # held-out slice accuracy from each card
    errors: list[str] = field(default_factory=list)
    measured: str = ""
    source: str = ""  # who measured: "Efficiency page", "make bench"

    def p50(self, model: str, runtime: str, batch: int = 1) -> float | None:
        return next((t.p50_ms for t in self.timings
                     if t.model == model and t.runtime == runtime and t.batch == batch), None)

    def baseline_name(self) -> str | None:
        return next((n for n, k in self.keys.items() if k == "baseline"), None)

    def ratio(self, model: str, runtime: str, batch: int = 1) -> float | None:
        """Latency as a multiple of the baseline's eager CPU latency in this same measurement."""
        base = self.baseline_name()
        b = self.p50(base, "eager_cpu", batch) if base else None
        t = self.p50(model, runtime, batch)
        return None if b is None or t is None else round(t / b, 4)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Measurement":
        d = dict(d)
        d["statics"] = {k: StaticStats(**v) for k, v in d["statics"].items()}
        d["timings"] = [Timing(**t) for t in d["timings"]]
        return cls(**d)


Progress = Callable[[float, str], None]


def measure(
    models: Sequence[LoadedModel], runtimes: Sequence[str], size: int = 224, batches: Sequence[int] = (1,),
    repeats: int = 20, calibration: Callable[[LoadedModel], np.ndarray] | None = None,
    progress: Progress | None = None, artifacts: Path | None = None, source: str = "",
) -> Measurement:
    """Static stats, ONNX export/quantisation (cached per checkpoint), then interleaved timing at batch
    1 and every other batch size in ``batches``. A runtime that fails for one model is recorded in
    ``errors`` and the rest still run. ``calibration(lm)`` gives int8 calibration slices."""
    say: Progress = progress or (lambda f, t: None)
    artifacts = artifacts or workspace_dir() / "cache" / "onnx"
    threads = int(host_info()["cores"])
    torch.set_num_threads(threads)
    statics, runners, errors = {}, {}, []
    steps = len(models) * len(runtimes)
    for i, lm in enumerate(models):
        statics[lm.name] = static_stats(lm, size)
        for j, rt in enumerate(runtimes):
            if rt == "eager_cpu_lesion" and not lm.has_lesion_map:
                continue  # nothing to time: the model makes no lesion map
            say(0.3 * (i * len(runtimes) + j) / max(steps, 1), f"Preparing {lm.name} · {RUNTIME_TITLES[rt]}"
                + (" (export/quantise, once per checkpoint)" if rt.startswith("ort") else ""))
            try:
                need = rt == "ort_int8" and calibration and not onnx_paths(artifacts, lm)[1].is_file()
                calib = calibration(lm) if need else None  # only a new quantisation needs slices
                runners[(lm.name, rt)] = make_runner(lm, rt, artifacts, calib, threads)
            except Exception as exc:  # one runtime failing must not lose the others
                errors.append(f"{lm.name} · {rt}: {exc}")
    sizes = sorted(set(batches) | {1})
    timings: list[Timing] = []
    for j, b in enumerate(sizes):
        def cb(frac: float, what: str, j: int = j) -> None:
            say(0.3 + 0.7 * (j + frac) / len(sizes), f"Timing {what}")
        res = interleaved(runners, size, b, warmup=2 if b > 1 else 3,
                          repeats=repeats if b == 1 else max(3, repeats // 4), progress=cb)
        timings += list(res.values())
    by_name = {lm.name: lm for lm in models}
    for t in timings:
        if t.batch == 1:
            t.peak_mem_mb = peak_memory_mb(by_name[t.model], t.runtime, size, t.batch)
    for lm in models:
        fp32, q8 = onnx_paths(artifacts, lm)
        s = statics[lm.name]
        s.onnx_fp32_mb = round(fp32.stat().st_size / 2**20, 2) if fp32.is_file() else None
        s.onnx_int8_mb = round(q8.stat().st_size / 2**20, 2) if q8.is_file() else None
    say(1.0, "Done")
    return Measurement(
        host=host_info(), size=size, repeats=repeats, runtimes=list(runtimes),
        settings={rt: RUNTIME_SETTINGS[rt] for rt in runtimes}, statics=statics, timings=timings,
        keys={lm.name: lm.key for lm in models}, checkpoints={lm.name: lm.ckpt_id for lm in models},
        accuracy={lm.name: (lm.card.metrics or {}).get("slice_accuracy") for lm in models},
        errors=errors, measured=time.strftime("%Y-%m-%d %H:%M"), source=source,
    )


def _latest_path(root: Path | None) -> Path:
    dev = hashlib.sha1(device_tag().encode()).hexdigest()[:10]
    return (root or workspace_dir() / "cache" / "efficiency") / f"latest-{dev}.json"


def save_latest(m: Measurement, root: Path | None = None) -> Path:
    """Keep ``m`` as this host's latest measurement (atomically: a reader never sees half a file)."""
    p = _latest_path(root)
    write_text_atomic(p, json.dumps(m.to_dict()))
    return p


def latest(root: Path | None = None) -> Measurement | None:
    """This host's latest measurement (from the page or ``make bench``), or None."""
    try:
        return Measurement.from_dict(json.loads(_latest_path(root).read_text()))
    except (OSError, ValueError, TypeError, KeyError):
        return None
