"""ONNX export with a parity check, static int8 quantisation (QDQ, U8 activations / S8 weights,
calibrated on real training slices), and an ONNX Runtime predictor.

The exporter is torch's TorchScript-based one (``dynamo=False``): it needs no extra packages and
handles every net we build. Batch, height and width are dynamic, so one file serves the 64-px demo
input and the 224-px benchmark.
"""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from .atomic import atomic_file

log = logging.getLogger(__name__)


class ExportError(RuntimeError):
    """The model could not be exported or does not match its PyTorch original."""


def export_onnx(model: torch.nn.Module, path: str | Path, size: int, opset: int = 17) -> Path:
    """Write ``model`` (eval mode, CPU, fp32) to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval().cpu().float()
    dummy = torch.zeros(1, 1, size, size)
    try:
        with atomic_file(path) as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model, (dummy,), str(tmp), input_names=["input"], output_names=["logits"], opset_version=opset,
                dynamic_axes={"input": {0: "batch", 2: "height", 3: "width"}, "logits": {0: "batch"}},
                dynamo=False, do_constant_folding=True,
            )
    except Exception as exc:
        raise ExportError(f"ONNX export failed: {exc}") from exc
    return path


def session(path: str | Path, threads: int | None = None, providers: list[str] | None = None,
            config: dict[str, str] | None = None) -> ort.InferenceSession:
    """An ORT session as a deployment would open it: ORT's default options (all graph optimisations,
    worker threads spinning between parallel sections, CPU memory arena) with ``threads`` intra-op threads
    (default: cores). ``config``: session config entries (``ctmodels.serving`` sets how its arena is handled).

    Spinning off was tried for quieter timing: 5-15 % slower per call on 2 cores, so not what a user
    deploying the file would see; the engine's timing handles the spinning instead.
    """
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads or os.cpu_count() or 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    for key, value in (config or {}).items():
        so.add_session_config_entry(key, value)
    return ort.InferenceSession(str(path), so, providers=providers or ["CPUExecutionProvider"])


class OrtPredictor:
    """Logits from an ONNX file, called like the PyTorch model (the engine's runner, parity checks)."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        self.path = Path(path)
        self.sess = session(path, threads)

    def __call__(self, x: np.ndarray | torch.Tensor) -> np.ndarray:
        arr = x.detach().cpu().numpy() if torch.is_tensor(x) else np.asarray(x)
        return self.sess.run(["logits"], {"input": arr.astype(np.float32, copy=False)})[0]


@dataclass(frozen=True)
class Parity:
    max_abs_logit_diff: float
    agreement: float  # share of inputs with the same predicted class
    n: int


def parity(model: torch.nn.Module, predictor: OrtPredictor, inputs: np.ndarray, batch: int = 32) -> Parity:
    """Compare ORT logits with PyTorch on ``inputs`` (N, 1, S, S), normalised like training."""
    model = model.eval().cpu()
    diffs, same = [], 0
    with torch.no_grad():
        for k in range(0, len(inputs), batch):
            x = inputs[k : k + batch].astype(np.float32)
            ref = model(torch.from_numpy(x)).numpy()
            got = predictor(x)
            diffs.append(np.abs(ref - got).max())
            same += int((ref.argmax(1) == got.argmax(1)).sum())
    return Parity(float(max(diffs)) if diffs else 0.0, same / max(len(inputs), 1), len(inputs))


def quantize_int8(fp32: str | Path, out: str | Path, calibration: np.ndarray, per_channel: bool = True) -> Path:
    """Static int8 quantisation, QDQ format, U8 activations / S8 weights, calibrated on ``calibration``."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self, data: np.ndarray) -> None:
            self.it = iter([{"input": data[i : i + 1].astype(np.float32)} for i in range(len(data))])

        def get_next(self):
            return next(self.it, None)

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # A scratch folder for the pre-processed graph (never the result); the result is written atomically.
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.work-") as work:
        pre = Path(work) / "pre.onnx"
        try:
            quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
        except Exception as exc:  # pre-processing only helps; quantise the raw graph if it fails
            log.warning("ONNX pre-processing skipped: %s", exc)
            pre = Path(fp32)
        with atomic_file(out) as staged:
            quantize_static(
                str(pre), str(staged), Reader(calibration), quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=per_channel,
            )
    return out
