"""What a radiologist waits for, measured on what Compare serves: the real-CT set when it is built (else the
demo set), its own input size and flips, each model on its served runtime (``ctmodels.serving``).

- **Time to verdict**: bytes of the P002 upload in → the classical involvement and every model's patient verdict,
  stage by stage (read, lung segmentation, involvement, scoring per model), the median of five after a warm-up,
  plus the Grad-CAM of the viewed slice that follows.
- **Whole-scan slices/s per runtime**: each model scoring P002's lung slices eagerly and with its ONNX files.
- **Five sessions at once**: five threads of this process run the page's path on P002 together (Streamlit serves
  each browser session from a thread of one process, through the same whole-scan slots); when each finishes and
  the process's peak resident memory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from ctmodels.assessment import assess
from ctmodels.atomic import write_json_atomic
from ctmodels.checkpoint import checkpoints_in
from ctmodels.efficiency import device_tag, host_info
from ctmodels.imaging.lung import involvement, segment_lungs
from ctmodels.imaging.reader import read_bytes
from ctmodels.inference import LoadedModel, load_model, prepare_input, score
from ctmodels.nets import compare_defaults
from ctmodels.preprocess import lung_slices
from ctmodels.serving import ONNX_FILES, ServedScorer, served_dir, served_session
from ctmodels.work_slots import SLOTS, tune_allocator, whole_scan_work
from ctmodels.workspace import demo_data_dir, models_dir, real_data_dir, real_models_dir, workspace_dir

from .served import median_seconds

log = logging.getLogger(__name__)

P002 = Path("covid-ct-md") / "Sample data" / "COVID-19 subjects" / "P002"


def served_set() -> tuple[str, list[LoadedModel]]:
    """The set Compare loads for a real upload: the real-CT set's default four when built, else the demo set's."""
    for name, root in (("real-CT set", real_models_dir()), ("demo set", models_dir())):
        found = {p.name: p for p in checkpoints_in(root)}
        keys = [k for k in compare_defaults() if k in found]
        if keys:
            return name, [load_model(found[k], k) for k in keys]
    raise LookupError("no model set to serve: run `make real-models` or `make demo-models` first")


def sample_upload() -> tuple[str, bytes]:
    """P002 zipped as a user uploads it (from ../shared), else the first demo phantom's file."""
    folder = real_data_dir() / P002
    if folder.is_dir():
        import io
        import zipfile

        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
            for f in sorted(folder.iterdir()):
                z.write(f, f.name)
        return "P002.zip", buf.getvalue()
    image = sorted((demo_data_dir() / "kaggle").rglob("*.nii*"))[0]
    return image.name, image.read_bytes()


def _stages(name: str, data: bytes, models: list[LoadedModel]) -> dict[str, Any]:
    t0 = time.perf_counter()
    vol = read_bytes(data, name).compact()
    t1 = time.perf_counter()
    lung = segment_lungs(vol)
    t2 = time.perf_counter()
    classical = involvement(vol, lung)
    t3 = time.perf_counter()
    a = assess(vol, models, lung, classical)
    t4 = time.perf_counter()
    a.at(a.largest_lung_slice())
    t5 = time.perf_counter()
    return {"read_s": t1 - t0, "lung_s": t2 - t1, "involvement_s": t3 - t2, "scoring_s": t4 - t3,
            "scoring_by_model_s": {m.name: m.prediction.seconds for m in a.models},
            "time_to_verdict_s": t4 - t0, "viewed_slice_cams_s": t5 - t4,
            "slices": vol.n_slices, "scored_slices": {m.name: len(m.prediction.slices) for m in a.models}}


def time_to_verdict(name: str, data: bytes, models: list[LoadedModel], repeats: int = 5) -> dict[str, Any]:
    """Median stage times of ``repeats`` runs after one warm-up (module docstring)."""
    _stages(name, data, models)
    runs = [_stages(name, data, models) for _ in range(repeats)]
    med = lambda key: round(statistics.median(r[key] for r in runs), 3)  # noqa: E731
    out = {k: med(k) for k in ("read_s", "lung_s", "involvement_s", "scoring_s", "time_to_verdict_s",
                               "viewed_slice_cams_s")}
    out["scoring_by_model_s"] = {m.name: round(statistics.median(r["scoring_by_model_s"][m.name] for r in runs), 3)
                                 for m in models}
    out["all_s"] = [round(r["time_to_verdict_s"], 3) for r in runs]
    out.update(upload=name, slices=runs[0]["slices"], scored_slices=runs[0]["scored_slices"], repeats=repeats,
               runtimes={m.name: m.runtime for m in models})
    return out


def throughput(name: str, data: bytes, models: list[LoadedModel]) -> dict[str, dict[str, float]]:
    """Whole-scan slices/s of each model per runtime on the upload's lung slices (median of three)."""
    vol = read_bytes(data, name).compact()
    lung = segment_lungs(vol)
    out: dict[str, dict[str, float]] = {}
    for lm in models:
        inp = prepare_input(lm, vol, lung_slices(lung, lm.pre.min_lung_share) or list(range(vol.n_slices)), lung)
        scorers: dict[str, Any] = {"eager": None}
        for runtime, file in ONNX_FILES.items():
            path = served_dir(lm.folder) / file
            if path.is_file():
                scorers[runtime] = ServedScorer(runtime, path, lm.has_lesion_map, served_session(path, threads=None))
        out[lm.name] = {}
        for runtime, scorer in scorers.items():
            probe = LoadedModel(lm.name, lm.folder, lm.model, lm.card, lm.pre, lm.ckpt_id, served=scorer)
            out[lm.name][runtime] = round(len(inp.slices) / median_seconds(lambda: score(probe, inp)), 1)
        out[lm.name]["served"] = lm.runtime
    return out


def five_sessions(name: str, data: bytes, models: list[LoadedModel], sessions: int = 5) -> dict[str, Any]:
    """``sessions`` threads run the page's whole-scan path at once (module docstring)."""
    proc = psutil.Process()
    base = proc.memory_info().rss
    peak = [base]
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.05)

    done: list[float] = [0.0] * sessions
    t0 = time.perf_counter()

    def session_path(k: int) -> None:
        with whole_scan_work():
            vol = read_bytes(data, name).compact()
        with whole_scan_work():
            lung = segment_lungs(vol)
            classical = involvement(vol, lung)
        with whole_scan_work():
            assess(vol, models, lung, classical)
        done[k] = time.perf_counter() - t0

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    workers = [threading.Thread(target=session_path, args=(k,)) for k in range(sessions)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    stop.set()
    watcher.join(1)
    return {"sessions": sessions, "slots": SLOTS, "done_s": sorted(round(d, 2) for d in done),
            "last_done_s": round(max(done), 2), "peak_rss_gb": round(peak[0] / 2**30, 3),
            "rss_before_gb": round(base / 2**30, 3)}


def _latest_path() -> Path:
    dev = hashlib.sha1(device_tag().encode()).hexdigest()[:10]  # as ctmodels.efficiency keeps its latest
    return workspace_dir() / "cache" / "efficiency" / f"as-served-{dev}.json"


def latest() -> dict[str, Any] | None:
    """This host's latest as-served measurement (from ``make bench`` or the Efficiency page), or None."""
    try:
        return json.loads(_latest_path().read_text())
    except (OSError, ValueError):
        return None


def measure(repeats: int = 5, progress: Callable[[float, str], None] | None = None) -> dict[str, Any]:
    """Everything above on the served set (module docstring), under the server's allocator settings (which
    change what ONNX Runtime's buffers cost: ``ctmodels.serving.served_session``); kept as this host's latest."""
    tune_allocator()
    say = progress or (lambda frac, text: log.info("%3.0f%% %s", 100 * frac, text))
    set_name, models = served_set()
    name, data = sample_upload()
    say(0.0, f"time to verdict on {name}, {repeats} runs after a warm-up …")
    ttv = time_to_verdict(name, data, models, repeats)
    say(0.55, "whole-scan slices/s per runtime …")
    rates = throughput(name, data, models)
    say(0.75, "five sessions at once …")
    out = {"set": set_name, "models": [m.name for m in models], "input_size": models[0].pre.size,
           "flip_average": bool(models[0].pre.flip_average), "time_to_verdict": ttv, "slices_per_s": rates,
           "five_sessions": five_sessions(name, data, models), "measured": time.strftime("%Y-%m-%d %H:%M:%S"),
           "host": host_info()}
    write_json_atomic(_latest_path(), out)
    say(1.0, "done")
    return out


if __name__ == "__main__":  # ``make bench`` measures in a process of its own (``bench.as_served_apart``)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    print(json.dumps(measure()))
