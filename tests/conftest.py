"""Shared fixtures: paths to the real sample data and a small phantom dataset built once per session."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import pytest

from tests.builders import QUICK_CV_MODELS

REPO = Path(__file__).resolve().parents[1]
REAL_DATA = Path(os.environ.get("CTSS_REAL_DATA", REPO.parent / "shared" / "data" / "real"))

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs one test process per core: each keeps to one compute thread (torch, OpenMP, BLAS; the
    # servers and trainings it starts inherit it), or two processes of two spinning threads share two cores.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "CTSS_THREADS"):
        os.environ[var] = "1"

#: The longest test files (from a minute down to 15 s each on 2 cores), handed to the test processes first: xdist
#: deals out whole files in collection order (`--no-loadscope-reorder`), and a long file dealt last would run
#: alone at the end while the other process sits idle. Only the speed of `make test` depends on this list.
LONGEST_FIRST = (
    # the first two run side by side while the session's model sets are built: the browser test builds them,
    # the others need none of them (the quick CV, their own trainings) and do not wait
    "tests/e2e/test_browser.py", "tests/training/test_real.py", "tests/training/test_pipeline.py",
    "tests/hardening/test_hostile_inputs.py", "tests/training/test_resume.py", "tests/ui/test_compare.py",
    "tests/e2e/test_pacs_browser.py", "tests/ctmodels/test_dicom_out.py", "tests/ctmodels/test_export_efficiency.py",
    "tests/training/test_served.py", "tests/ctmodels/imaging/test_lung_same_as_reference.py",
    "tests/ui/test_data_browser.py", "tests/ui/test_training_page.py", "tests/ctmodels/test_checkpoint.py",
    "tests/ctmodels/imaging/test_bad_input.py", "tests/hardening/test_sessions.py",
)


def pytest_collection_modifyitems(config, items) -> None:
    rank = {path: k for k, path in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))  # stable: the rest keep their order


@contextlib.contextmanager
def _workspace_env(ws: Path):
    """CTSS_WORKSPACE=ws for a session fixture's build (monkeypatch is function-scoped)."""
    old = os.environ.get("CTSS_WORKSPACE")
    os.environ["CTSS_WORKSPACE"] = str(ws)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("CTSS_WORKSPACE", None)
        else:
            os.environ["CTSS_WORKSPACE"] = old


def _built_once(tmp_path_factory, name: str, build: Callable[[Path], None]) -> Path:
    """``build(folder)`` once per test run, shared by the pytest-xdist workers: the first to ask builds under a
    file lock, the others wait and reuse it (model sets take a minute each; every worker building them would cost
    more than running the tests on one core). The controller removes it with the run's temp folder."""
    from filelock import FileLock

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the run's folder, above each worker's own popen-gwN
    folder, built = root / name, root / f"{name}.built"
    with FileLock(str(root / f"{name}.lock")):
        if not built.is_file():
            shutil.rmtree(folder, ignore_errors=True)  # a worker that failed half way
            folder.mkdir(parents=True)
            build(folder)
            built.touch()
    return folder


def p002_zip(real: Path = REAL_DATA) -> bytes:
    """The real COVID-CT-MD P002 series (133 DICOM slices) zipped as a user would upload it."""
    from tests.builders import zip_folder

    folder = real / "covid-ct-md" / "Sample data" / "COVID-19 subjects" / "P002"
    return zip_folder(folder, "**/*", stored=True)


def _need_real_data() -> None:
    if not (REAL_DATA / "README.md").is_file():
        pytest.skip(f"real sample data not found at {REAL_DATA} (../shared is absent on this machine)")


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The real sample folder; tests that need it skip with a clear reason when ../shared is absent."""
    _need_real_data()
    return REAL_DATA


@pytest.fixture(scope="session")
def small_phantoms(tmp_path_factory) -> Path:
    """A small phantom dataset (6 patients, 128 px, 12 slices) in every layout, built once."""
    from ctmodels.imaging.phantom import PhantomConfig, build_dataset

    def build(folder: Path) -> None:
        cfg = PhantomConfig(size=128, n_slices=12, pixel_mm=2.8, slice_mm=20.0)
        build_dataset(folder / "demo", n_patients=6, seed=7, cfg=cfg, workers=1)

    return _built_once(tmp_path_factory, "phantoms", build) / "demo"


@pytest.fixture()
def workspace(tmp_path, monkeypatch, small_phantoms) -> Path:
    """A fresh workspace whose demo data is the small phantom set (the app reads CTSS_WORKSPACE)."""
    ws = tmp_path / "workspace"
    (ws / "data").mkdir(parents=True)
    shutil.copytree(small_phantoms, ws / "data" / "demo")
    monkeypatch.setenv("CTSS_WORKSPACE", str(ws))
    return ws


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory, small_phantoms) -> Path:
    """A tiny trained model set (baseline, ghost, pruned, kd at 32 px, one epoch each) built once.

    Good enough to exercise every page end to end; not meant to be accurate.
    """
    from training.config import RunConfig, merge
    from training.engine.pipeline import execute

    def build(folder: Path) -> None:
        ws = folder / "workspace"
        (ws / "data").mkdir(parents=True)
        shutil.copytree(small_phantoms, ws / "data" / "demo")
        with _workspace_env(ws):
            def run(**kw):
                return execute(RunConfig.from_dict(merge(merge(RunConfig().to_dict(), TINY), kw)))

            runs = {"baseline": run(model="baseline"), "ghost": run(model="ghost")}
            teacher = str(runs["baseline"].model_dir)
            runs["kd"] = run(command="distill", model="kd", distill={"teacher": teacher})
            runs["pruned"] = run(command="prune", prune={"checkpoint": teacher, "steps": 1, "sensitivity": False})
            for key, r in runs.items():
                shutil.copytree(r.model_dir, ws / "models" / key)

    return _built_once(tmp_path_factory, "tiny-models", build) / "workspace" / "models"


def _link_or_copy(src: str, dst: str) -> None:
    """Hard-link big files (weights are only ever replaced by rename, never written in place), copy the rest."""
    if os.path.getsize(src) > 1 << 20:
        try:
            os.link(src, dst)
            return
        except OSError:
            pass
    shutil.copy2(src, dst)


@pytest.fixture()
def workspace_with_models(workspace, tiny_models) -> Path:
    """The tiny model set in a fresh workspace; weights are hard links, so each test costs kilobytes of disk."""
    shutil.copytree(tiny_models, workspace / "models", copy_function=_link_or_copy)
    return workspace


@pytest.fixture(scope="session")
def tiny_real_models(tmp_path_factory) -> Path:
    """A tiny real-CT set (baseline, ghost, pruned, kd) trained through the make real-models path; the folder
    above holds ``baseline-run``, the path of the baseline's run (its evaluation).

    The real recipe's quick settings: 120 of the real 8-bit slices, 32 px, one epoch. Skips without
    ../shared. Not accurate; it exercises the real-CT input path and the Compare page's set choice.
    """
    _need_real_data()
    from training.engine.pipeline import execute
    from training.recipes.model_set import config_for
    from training.recipes.real import REAL

    def build(folder: Path) -> None:
        ws = folder / "workspace"
        ws.mkdir()
        with _workspace_env(ws):
            out = ws / "models" / "real"
            runs = {"baseline": execute(config_for(REAL, "baseline", True, out / "baseline"))}
            shutil.copytree(runs["baseline"].model_dir, out / "baseline")
            (ws / "baseline-run").write_text(str(runs["baseline"].dir))  # its evaluation, for the tests of the path
            for key in ("ghost", "pruned", "kd"):
                runs[key] = execute(config_for(REAL, key, True, out / "baseline"))
                shutil.copytree(runs[key].model_dir, out / key)

    return _built_once(tmp_path_factory, "tiny-real-models", build) / "workspace" / "models" / "real"


@pytest.fixture(scope="session")
def quick_cv(tmp_path_factory) -> Path:
    """A quick real-CT cross-validation (2 folds; the baseline, then kd and ghost_kd side by side in two lanes; tiny
    settings) run once: its folder."""
    _need_real_data()
    from training.config import CVConfig
    from training.recipes.cv import run as run_cv

    def build(folder: Path) -> None:
        ws = folder / "workspace"
        ws.mkdir()
        with _workspace_env(ws):
            with mock.patch.dict(os.environ, {"CTSS_LANES": "2"}):  # whatever the host: each fold's students in lanes
                run_cv(CVConfig(recipe="real", folds=2, repeats=1, models=list(QUICK_CV_MODELS), quick=True), ws / "cv")

    return _built_once(tmp_path_factory, "quick-cv", build) / "workspace" / "cv"


@pytest.fixture()
def workspace_with_both_sets(workspace_with_models, tiny_real_models) -> Path:
    """The tiny phantom set and the tiny real-CT set in one fresh workspace (weights hard-linked)."""
    shutil.copytree(tiny_real_models, workspace_with_models / "models" / "real", copy_function=_link_or_copy)
    return workspace_with_models


# Tiny training settings: 32-px inputs on the 6-patient phantom set, so a run takes seconds.
TINY = {
    "data": {"source": "demo", "split": [0.5, 0.17, 0.33], "max_slices_per_case": 4},
    "optim": {"epochs": 1, "batch_size": 8},
    "preprocessing": {"size": 32},
    "augment": {"enabled": False},
}


@pytest.fixture()
def tiny():
    from training.config import RunConfig, merge

    def make(**override) -> "RunConfig":
        return RunConfig.from_dict(merge(merge(RunConfig().to_dict(), TINY), override))
    return make


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory):
    """A real DICOMweb server: Debian's Orthanc with its DICOMweb plugin on a free 127.0.0.1 port, its own storage,
    stopped after the session. ``make test`` installs it; the PACS tests are part of the suite, never skipped."""
    from ctmodels.pacs.orthanc import LocalOrthanc, installed

    if not installed():
        pytest.fail("Orthanc is not installed: `make test` installs it (apt-get install -y orthanc orthanc-dicomweb)")
    with LocalOrthanc(tmp_path_factory.mktemp("orthanc")) as server:
        yield server
