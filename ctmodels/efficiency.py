"""What a compression really buys, measured on this host: parameters (dense and non-zero), size on
disk, MACs, latency p50/p90 at batch 1, throughput over a batch sweep, peak memory; for PyTorch eager
on CPU (threads pinned), CUDA eager and AMP when a GPU is present, and ONNX Runtime fp32/int8.

Timing is interleaved (every repeat visits every model/runtime in a rotated order) after a warm-up,
so slow drift of a shared machine hits all models alike; report medians and ratios to the baseline
measured in the same run. Results are cached per (checkpoint, device, runtime, size, batch).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .export import OrtPredictor, export_onnx, quantize_int8
from .inference import LoadedModel

RUNTIMES = ("eager_cpu", "ort_fp32", "ort_int8", "cuda_eager", "cuda_amp")
RUNTIME_TITLES = {
    "eager_cpu": "PyTorch eager, CPU",
    "ort_fp32": "ONNX Runtime fp32, CPU",
    "ort_int8": "ONNX Runtime int8 (static QDQ), CPU",
    "cuda_eager": "PyTorch eager, CUDA",
    "cuda_amp": "PyTorch AMP, CUDA",
}


def available_runtimes() -> list[str]:
    base = ["eager_cpu", "ort_fp32", "ort_int8"]
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
    """Identifies the hardware a cached measurement belongs to."""
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


def static_stats(lm: LoadedModel, size: int = 224) -> StaticStats:
    import torch_pruning as tp

    params = sum(p.numel() for p in lm.model.parameters())
    nonzero = sum(int((p != 0).sum()) for p in lm.model.parameters())
    macs, _ = tp.utils.count_ops_and_params(lm.model.cpu().eval(), torch.zeros(1, 1, size, size))
    weights = lm.folder / lm.card.weights_file
    return StaticStats(lm.name, lm.key, params, nonzero, int(macs), round(weights.stat().st_size / 2**20, 2))


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


def make_runner(lm: LoadedModel, runtime: str, root: Path, calibration: np.ndarray | None, threads: int) -> Fn:
    """A callable taking a normalised float32 batch (N, 1, S, S)."""
    if runtime == "eager_cpu":
        model = lm.model.cpu().eval()

        def run_eager(x: np.ndarray) -> object:
            with torch.inference_mode():
                return model(torch.from_numpy(x))
        return run_eager
    if runtime in ("ort_fp32", "ort_int8"):
        fp32, q8 = ensure_onnx(lm, root, calibration, runtime == "ort_int8")
        pred = OrtPredictor(q8 if runtime == "ort_int8" else fp32, threads)
        return pred
    if runtime in ("cuda_eager", "cuda_amp"):
        if not torch.cuda.is_available():
            raise RuntimeError("no CUDA device")
        import copy

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
    progress: Callable[[float, str], None] | None = None, rng_seed: int = 0,
) -> dict[tuple[str, str], Timing]:
    """Time every runner on the same input; repeats visit all runners in a rotated order."""
    x = np.random.default_rng(rng_seed).standard_normal((batch, 1, size, size)).astype(np.float32)
    keys = list(runners)
    times: dict[tuple[str, str], list[float]] = {k: [] for k in keys}
    total = len(keys) * (warmup + repeats)
    done = 0
    for r in range(warmup + repeats):
        order = keys[r % len(keys):] + keys[: r % len(keys)]
        for k in order:
            t0 = time.perf_counter()
            runners[k](x)
            dt = (time.perf_counter() - t0) * 1000.0
            if r >= warmup:
                times[k].append(dt)
            done += 1
            if progress:
                progress(done / total, f"{k[0]} · {RUNTIME_TITLES.get(k[1], k[1])} · batch {batch}")
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
        return None
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


class ResultCache:
    """Measurements per (checkpoint, device, runtime, size, batch) as small JSON files."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, ckpt: str, runtime: str, size: int, batch: int) -> Path:
        import hashlib

        dev = hashlib.sha1(device_tag().encode()).hexdigest()[:10]
        return self.root / f"{ckpt}-{dev}-{runtime}-{size}-b{batch}.json"

    def get(self, ckpt: str, runtime: str, size: int, batch: int) -> Timing | None:
        p = self._path(ckpt, runtime, size, batch)
        try:
            return Timing(**json.loads(p.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def put(self, ckpt: str, t: Timing) -> None:
        p = self._path(ckpt, t.runtime, t.size, t.batch)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(t)))
        os.replace(tmp, p)
