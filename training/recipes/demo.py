"""``python -m training demo``: build the demo model set on the demo phantoms, end to end.

baseline → ghost (from scratch) → pruned (structured L1 of the baseline) → kd (ResNet18 student of
the baseline) → sparse (unstructured magnitude pruning of the baseline) → ghost_kd (Ghost-ResNet18
student). Each finished model is published to ``workspace/models/<key>`` (what the app's pages
offer by default); existing ones are kept unless ``--force`` or the recipe changed. A report lands in
``workspace/models/demo_report.{json,md}``. The recipe runs through ``training.recipes.model_set``, like the real set.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from ctmodels.imaging.phantom import build_dataset
from ctmodels.workspace import demo_data_dir, models_dir

from ..jobs.progress import set_progress_path, writer
from .model_set import Recipe, bar, build, finished

log = logging.getLogger(__name__)
DEMO_PATIENTS = 60

# Demo recipe: small inputs (64 px: each lung's box, side by side, outside-lung pixels neutralised)
# so six models train on a 2-core CPU in ≤ 15 min. Slices within 20–30 % involvement carry no label (the rule's excluded band): their
# label is a coin toss at the 25 % cut, and they are left out of training and slice-level metrics.
COMMON: dict[str, Any] = {
    "data": {"source": "demo", "split": [0.5, 0.2, 0.3], "excluded_band": [20.0, 30.0]},
    "optim": {"optimizer": "adamw", "lr": 2e-3, "batch_size": 32, "epochs": 10},
    "preprocessing": {"size": 64, "roi_crop": True, "roi_mode": "bilateral", "roi_pad": 0.02, "lung_mask_input": True},
    "seed": 0,
}
STEPS: list[tuple[str, dict[str, Any]]] = [
    ("baseline", {"command": "train", "model": "baseline"}),
    ("ghost", {"command": "train", "model": "ghost", "optim": {"epochs": 14}}),  # from scratch: 10 epochs left its CAMs diffuse
    ("pruned", {"command": "prune", "model": "baseline",
                "prune": {"target_ratio": 0.6, "min_ratio": 0.45, "steps": 3, "finetune_epochs": 1},
                "optim": {"lr": 3e-4}}),
    ("kd", {"command": "distill", "model": "kd", "distill": {"temperature": 4.0, "alpha": 0.5},
            "optim": {"epochs": 8}}),
    ("sparse", {"command": "prune", "model": "baseline",
                "prune": {"unstructured": True, "sparsity": 0.5, "finetune_epochs": 3},
                "optim": {"optimizer": "rmsprop", "lr": 1e-4}}),
    ("ghost_kd", {"command": "distill", "model": "ghost_kd", "distill": {"temperature": 4.0, "alpha": 0.5},
                  "optim": {"epochs": 8}}),
]
QUICK: dict[str, Any] = {
    "data": {"max_slices_per_case": 3}, "optim": {"epochs": 1, "batch_size": 8},
    "preprocessing": {"size": 32}, "augment": {"enabled": False},
}


DEMO = Recipe(
    name="demo", title="Demo set (synthetic phantoms, HU)", common=COMMON, steps=STEPS, quick=QUICK, folder=models_dir,
    notes="Trained on synthetic phantoms: a demonstration of the pipeline, not a classifier for real scans.",
)


def main(force: bool = False, quick: bool = False) -> int:
    on = writer(set_progress_path(DEMO.name))
    if not (demo_data_dir() / "manifest.json").is_file():
        print(f"building {DEMO_PATIENTS} demo phantoms into {demo_data_dir()} …", file=sys.stderr)

        def phantoms(done: int, total: int) -> None:
            print(f"\r  {bar(done, total)} {done}/{total} patients", end="", file=sys.stderr)
            on({"stage": "building the demo phantoms", "unit": "patient", "epoch": done, "epochs": total,
                "batch": 1, "batches": 1})

        build_dataset(demo_data_dir(), n_patients=DEMO_PATIENTS, seed=0, progress=phantoms)
        print(file=sys.stderr)
    build(DEMO, force=force, quick=quick, progress=on)
    finished(on, len(DEMO.keys))
    return 0
