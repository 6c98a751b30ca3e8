"""Training: start runs (presets or custom), watch them live, cancel/resume, compare, export."""

from __future__ import annotations

import os

import pandas as pd
import streamlit as st
import torch

from ctmodels.checkpoint import checkpoints_in, is_checkpoint
from ctmodels.nets import MODEL_INFO, MODEL_KEYS
from ctmodels.workspace import PathNotAllowedError, models_dir, resolve_under_roots, workspace_dir
from training.config import OPTIMIZERS, ConfigError, RunConfig, merge
from training.data.prepare import named_sources
from training.jobs import runner as jobs
from training.jobs.registry import RunStore
from training.recipes.demo import COMMON as DEMO_RECIPE
from training.recipes.presets import presets
from training.recipes.real import have_real_data
from ui import export, figures
from ui.models import EXTRA_KEY
from ui.training_view import (
    STATUS_COLOR,
    curves,
    cv_report_view,
    evaluation_block,
    history_csv,
    measured_cv_reports,
    progress_block,
    runs_table,
)
from ui.uploads import save_dataset_zip

st.title("Training")
gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
st.caption(f"Device: **{gpu}** (AMP + channels_last)" if gpu else
           f"Device: **CPU**, {os.cpu_count()} cores (no GPU found; AMP is used on CUDA only). "
           "Runs execute in separate processes: closing the browser or restarting the app does not stop them.")
store = RunStore()
jobs.reconcile(store)
new_tab, runs_tab, compare_tab, cv_tab = st.tabs(["New run", "Runs", "Compare runs", "Cross-validation"])

# ------------------------------------------------------------------ new run
with new_tab:
    recipes = presets()
    preset = st.selectbox("Preset", ["Custom"] + list(recipes), key="tr_preset",
                          help="Paper recipes fill the form; anything can still be changed.")
    d = merge(merge(RunConfig().to_dict(), DEMO_RECIPE), recipes.get(preset, {}))
    with st.form("tr_form"):
        c1, c2, c3 = st.columns(3)
        command = c1.selectbox("What", ["train", "distill", "prune"], index=["train", "distill", "prune"].index(d["command"]),
                               key=f"tr_cmd_{preset}")
        model = c2.selectbox("Model", list(MODEL_KEYS), index=MODEL_KEYS.index(d["model"]) if d["model"] in MODEL_KEYS else 0,
                             format_func=lambda k: f"{k} — {MODEL_INFO[k].title}", key=f"tr_model_{preset}")
        name = c3.text_input("Run name", value="", key=f"tr_name_{preset}")
        sources = {s.title: s.key for s in named_sources()}
        data_options = list(sources) + ["Local folder", "Uploaded zip"]
        wanted = next((t for t, k in sources.items() if k == d["data"]["source"]), data_options[0])
        c1, c2, c3 = st.columns([2, 2, 1])
        data_choice = c1.selectbox("Dataset", data_options, index=data_options.index(wanted), key=f"tr_data_{preset}")
        folder = c2.text_input("Folder (for 'Local folder')", key=f"tr_folder_{preset}")
        targets = {"label": "mild/severe label", "involvement": "involvement (soft labels)"}
        target = c3.selectbox("Learn", list(targets), index=list(targets).index(d["data"].get("target", "label")),
                              format_func=targets.get, key=f"tr_target_{preset}",
                              help="The label is a cut on involvement; learning the involvement itself keeps how "
                                   "far each slice is from the cut (see README, Real CT).")
        upload = st.file_uploader("Dataset zip (for 'Uploaded zip'; any layout the Data Browser reads)", type=["zip"],
                                  key=f"tr_zip_{preset}")
        o = d["optim"]
        c1, c2, c3, c4, c5 = st.columns(5)
        epochs = c1.number_input("Epochs", 1, 500, int(o["epochs"]), key=f"tr_epochs_{preset}")
        batch = c2.number_input("Batch size", 2, 512, int(o["batch_size"]), key=f"tr_batch_{preset}")
        lr = c3.number_input("Learning rate", 1e-6, 1.0, float(o["lr"]), format="%.5f", key=f"tr_lr_{preset}")
        opt = c4.selectbox("Optimiser", list(OPTIMIZERS), index=OPTIMIZERS.index(o["optimizer"]), key=f"tr_opt_{preset}")
        size = c5.number_input("Image size (px)", 32, 512, int(d["preprocessing"]["size"]), step=16, key=f"tr_size_{preset}")
        a = d["augment"]
        c1, c2, c3, c4, c5, c6 = st.columns(6)
        aug = c1.toggle("Augment", a["enabled"], key=f"tr_aug_{preset}")
        rot = c2.number_input("Rotation °", 0.0, 45.0, float(a["rotation_deg"]), key=f"tr_rot_{preset}")
        zoom = c3.number_input("Zoom ±", 0.0, 0.5, float(a["zoom"]), key=f"tr_zoom_{preset}")
        bc = c4.number_input("Brightness/contrast ±", 0.0, 0.5, float(a["brightness"]), key=f"tr_bc_{preset}")
        hflip = c5.toggle("Flip L/R", a["hflip"], key=f"tr_hflip_{preset}")
        vflip = c6.toggle("Flip U/D", a["vflip"], key=f"tr_vflip_{preset}")
        pp_ = d["preprocessing"]
        c1, c2, c3, c4, c5, c6 = st.columns(6)
        roi = c1.toggle("Lung-ROI crop", pp_["roi_crop"], key=f"tr_roi_{preset}")
        bilateral = c2.toggle("One box per lung", pp_.get("roi_mode", "bilateral") == "bilateral",
                              key=f"tr_bilat_{preset}", help="Each lung's box, side by side (else one box)")
        masked = c3.toggle("Lung masking", pp_.get("lung_mask_input", True), key=f"tr_mask_{preset}",
                           help="Pixels outside the lungs set to aerated-lung grey")
        clahe = c4.toggle("CLAHE", pp_.get("clahe", False), key=f"tr_clahe_{preset}")
        seed = c5.number_input("Seed", 0, 10**6, int(d["seed"]), key=f"tr_seed_{preset}")
        nprocs = c6.number_input("Processes (DDP)", 1, 8, 1, key=f"tr_nprocs_{preset}",
                                 help="torchrun --nproc_per_node: gloo on CPU, nccl on GPUs")
        c1, c2, _ = st.columns([1, 1, 4])
        landmarks = c1.toggle("Intensity landmarks", pp_.get("intensity", "window") == "landmarks",
                              key=f"tr_landmarks_{preset}",
                              help="Map aerated lung and soft tissue to fixed values: 8-bit slices with any window "
                                   "and HU scans then look alike")
        orient = c2.toggle("Lungs side by side", pp_.get("orient", False), key=f"tr_orient_{preset}",
                           help="Turn rotated slices (Inf-Net style) so the lungs lie side by side")
        checkpoints = {p.name: str(p) for p in checkpoints_in(models_dir())}
        with st.expander("Distillation and pruning", expanded=command != "train"):
            dd, pp = d.get("distill") or {}, d.get("prune") or {}
            c1, c2, c3 = st.columns(3)
            teacher = c1.selectbox("Teacher / model to prune", list(checkpoints) or ["(none yet)"],
                                   key=f"tr_teacher_{preset}")
            temp = c2.number_input("KD temperature T", 0.5, 20.0, float(dd.get("temperature", 4.0)), key=f"tr_T_{preset}")
            alpha = c3.number_input("KD α (hard-label weight)", 0.0, 1.0, float(dd.get("alpha", 0.5)), key=f"tr_alpha_{preset}")
            c1, c2, c3, c4, c5 = st.columns(5)
            ratio = c1.number_input("Pruning ratio", 0.05, 0.9, float(pp.get("target_ratio", 0.5)), key=f"tr_ratio_{preset}")
            min_ratio = c2.number_input("Min ratio (sensitive)", 0.0, 0.9, float(pp.get("min_ratio", 0.3)), key=f"tr_minr_{preset}")
            steps = c3.number_input("Steps", 1, 10, int(pp.get("steps", 3)), key=f"tr_steps_{preset}")
            ft = c4.number_input("Fine-tune epochs", 1, 100, int(pp.get("finetune_epochs", 1)), key=f"tr_ft_{preset}")
            unstructured = c5.toggle("Unstructured (sparse)", bool(pp.get("unstructured", False)), key=f"tr_uns_{preset}")
        submitted = st.form_submit_button("Start run", type="primary")
    if submitted:
        try:
            if data_choice == "Local folder":
                source = str(resolve_under_roots(folder))
            elif data_choice == "Uploaded zip":
                if upload is None:
                    raise ConfigError("choose a dataset zip to upload")
                source = str(save_dataset_zip(upload, workspace_dir() / "uploads"))
            else:
                source = sources[data_choice]
            cfg_d = merge(d, {
                "command": command, "model": model, "name": name or None, "seed": int(seed),
                "data": {"source": source, "target": target},
                "optim": {"epochs": int(epochs), "batch_size": int(batch), "lr": float(lr), "optimizer": opt},
                "augment": {"enabled": aug, "rotation_deg": rot, "zoom": zoom, "brightness": bc, "contrast": bc,
                            "hflip": hflip, "vflip": vflip},
                "preprocessing": {"size": int(size), "roi_crop": roi, "clahe": clahe, "lung_mask_input": masked,
                                  "roi_mode": "bilateral" if bilateral else "box",
                                  "intensity": "landmarks" if landmarks else "window", "orient": orient},
            })
            if command == "distill":
                cfg_d["distill"] = {"teacher": checkpoints.get(teacher, ""), "temperature": temp, "alpha": alpha}
            if command == "prune":
                cfg_d["prune"] = {"checkpoint": checkpoints.get(teacher, ""), "target_ratio": ratio, "min_ratio": min_ratio,
                                  "steps": int(steps), "finetune_epochs": int(ft), "unstructured": unstructured,
                                  "sensitivity": True, "sparsity": 0.5, "power": 3.0}
            cfg = RunConfig.from_dict(cfg_d)
            run = jobs.enqueue(cfg, nprocs=int(nprocs), store=store)
        except (ConfigError, PathNotAllowedError, ValueError) as exc:
            st.error(f"**Cannot start this run:** {exc}", icon=":material/error:")
        else:
            st.session_state["tr_selected"] = run.id
            st.success(f"Queued **{run.id}**. Follow it in the Runs tab.", icon=":material/play_arrow:")

# ------------------------------------------------------------------ runs
with runs_tab:
    runs = store.list()
    if not runs:
        st.info("No runs yet.")
    else:
        c1, c2 = st.columns(2)
        status_f = c1.multiselect("Status", list(STATUS_COLOR), key="tr_status_filter")
        cmd_f = c2.multiselect("Command", ["train", "distill", "prune", "cv"], key="tr_cmd_filter")
        shown = [r for r in runs if (not status_f or r.status in status_f) and (not cmd_f or r.command in cmd_f)]
        table = runs_table(shown)
        st.dataframe(table, hide_index=True, width="stretch")
        st.download_button("Runs (CSV)", table.to_csv(index=False).encode(), "runs.csv", "text/csv", key="tr_runs_csv")
        ids = [r.id for r in shown]
        if ids:
            default = ids.index(st.session_state["tr_selected"]) if st.session_state.get("tr_selected") in ids else 0
            sel = st.selectbox("Run", ids, index=default, key="tr_run")
            st.session_state["tr_selected"] = sel

            @st.fragment(run_every=2.0)
            def live(run_id: str) -> None:
                run = store.get(run_id)
                st.badge(run.status.upper(), color=STATUS_COLOR[run.status])
                if run.status in ("queued", "running"):
                    progress_block(run)
                if run.error:
                    st.error(run.error.split("\n")[0])
                if run.command == "cv":
                    st.caption("A cross-validation: its results are in the Cross-validation tab.")
                else:
                    curves({run.name or run.id: run.metrics()}, f"tr_live_{run.id}")
                with st.expander("Log (last lines)", expanded=run.status == "failed"):
                    st.code(jobs.log_tail(run.log_path, 25) or "(empty)")

            live(sel)
            run = store.get(sel)
            b1, b2, b3, b4 = st.columns(4)
            if run.status in ("queued", "running") and b1.button("Cancel", key="tr_cancel"):
                jobs.cancel(run.id, store)
                st.rerun()
            if run.status in ("failed", "cancelled") and b2.button("Resume", key="tr_resume"):
                jobs.resume(run.id, store)
                st.rerun()
            if run.status == "completed" and is_checkpoint(run.model_dir):
                if b3.button("Use on the Compare page", key="tr_use"):
                    st.session_state.setdefault(EXTRA_KEY, {})[run.name or run.id] = str(run.model_dir)
                    st.success("Added: pick it in the Compare page's model list.")
            if run.status not in ("queued", "running"):
                confirm = b4.checkbox("Confirm delete", key="tr_del_ok")
                if b4.button("Delete run", key="tr_delete", disabled=not confirm):
                    store.delete(run.id)
                    st.session_state.pop("tr_selected", None)
                    st.rerun()
            d1, d2 = st.columns(2)
            d1.download_button("Curves (CSV)", history_csv(run), f"{run.id}-curves.csv", "text/csv", key="tr_hist_csv")
            if run.metrics():
                d2.download_button("Curves (PNG)", export.curves_png({run.name or run.id: run.metrics()}),
                                   f"{run.id}-curves.png", "image/png", key="tr_hist_png")
            evaluation_block(run, f"tr_eval_{run.id}")
            with st.expander("Configuration"):
                st.json(run.config)

# ------------------------------------------------------------------ compare runs
with compare_tab:
    done = [r for r in store.list() if r.metrics()]
    picked = st.multiselect("Runs to compare", [r.id for r in done], key="tr_cmp")
    if picked:
        chosen = [store.get(i) for i in picked]
        curves({r.name or r.id: r.metrics() for r in chosen}, "tr_cmp_curves")
        rows = [{"run": r.name or r.id, "model": r.model_key, **r.summary.get("test", {})} for r in chosen]
        df = pd.DataFrame(rows)
        st.dataframe(df, hide_index=True, width="stretch")
        st.download_button("Comparison (CSV)", df.to_csv(index=False).encode(), "runs_comparison.csv", "text/csv",
                           key="tr_cmp_csv")
        evs = {r.name or r.id: r.evaluation() for r in chosen}
        cols = st.columns(max(1, len(chosen)))
        for col, (n, ev) in zip(cols, evs.items()):
            if ev:
                col.plotly_chart(figures.confusion(ev["slice"]["confusion"], f"{n}: slices"),
                                 config=figures.PLOTLY_CONFIG, key=f"tr_cmp_cm_{n}")
        st.plotly_chart(figures.roc({n: ev["slice"].get("roc") for n, ev in evs.items() if ev}, "ROC (slices)"),
                        config=figures.PLOTLY_CONFIG, key="tr_cmp_roc")

# ------------------------------------------------------------------ cross-validation
with cv_tab:
    st.markdown("Cross-validation of a whole model set: every fold trains the set's six steps on the other "
                "patients and scores the held-out ones; the classical reference is fitted on the same folds. "
                "**By patient** (k folds) or **by source** (leave one source out: coronacases.org, radiopaedia.org, "
                "MedSeg — what a new hospital's scans are to a model). With 14 patients, one split is noise.")
    with st.form("cv_form"):
        real_ok = have_real_data()
        c0, c1, c2, c3, c4 = st.columns(5)
        split = c0.selectbox("Split", ["patients", "sources"] if real_ok else ["patients"], key="cv_split",
                             format_func={"patients": "By patient (k-fold)", "sources": "Leave one source out"}.get)
        recipe = c1.selectbox("Recipe", ["real", "demo"] if real_ok else ["demo"], key="cv_recipe",
                              format_func={"real": "Real CT (make real-models)", "demo": "Demo phantoms"}.get)
        folds = c2.number_input("Folds", 2, 10, 5, key="cv_folds", help="k-fold only; by source: one fold per source")
        repeats = c3.number_input("Repeats", 1, 10, 1, key="cv_repeats", help="each repeat reshuffles the folds")
        cv_seed = c4.number_input("Seed", 0, 10**6, 0, key="cv_seed")
        cv_models = st.multiselect("Models", list(MODEL_KEYS), default=list(MODEL_KEYS), key="cv_models",
                                   help="the baseline is trained too when a model starts from it")
        c1, c2 = st.columns(2)
        cam = c1.toggle("Grad-CAM check on held-out severe slices", True, key="cv_cam")
        quick = c2.toggle("Quick smoke test (tiny models, minutes)", False, key="cv_quick")
        st.caption("The full real-CT cross-validation trains 5 × 6 models (by source: 3 × 6): about 2 hours (by "
                   "source: 1.5) per repeat on 2 CPU cores.")
        go = st.form_submit_button("Start cross-validation", type="primary")
    if go:
        try:
            cfg = RunConfig.from_dict({"command": "cv", "model": "cv", "name": f"cv-{recipe}", "cv": {
                "recipe": recipe, "split": split, "folds": int(folds), "repeats": int(repeats), "seed": int(cv_seed),
                "models": cv_models, "cam": cam, "quick": quick}})
            run = jobs.enqueue(cfg, store=store)
        except (ConfigError, ValueError) as exc:
            st.error(f"**Cannot start this cross-validation:** {exc}", icon=":material/error:")
        else:
            st.session_state["tr_selected"] = run.id
            st.success(f"Queued **{run.id}**. Follow it in the Runs tab; results appear here.", icon=":material/play_arrow:")
    cv_runs = [r for r in store.list(command="cv") if r.cv_report()]
    shipped = {f"measured by the developers: {'by source' if k == 'sources' else 'by patient'} (docs/measurements)": v
               for k, v in measured_cv_reports().items()}
    options = [r.id for r in cv_runs] + list(shipped)
    if not options:
        st.info("No cross-validation results yet.")
    else:
        pick = st.selectbox("Results", options, key="cv_pick")
        report = shipped[pick] if pick in shipped else store.get(pick).cv_report()
        cv_report_view(report, "cv_view")
