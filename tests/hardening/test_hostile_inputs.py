"""≥ 200 malformed inputs through read_any (in a child process limited to 2 GB, 10 s per input) and through
the Compare page: each gives a typed error or a correct read, never an unhandled exception, a hang or a
memory blow-up. The slow run adds issue 16's small-but-expensive uploads at their sizes, every case of
``test_bad_input`` and the real P002 series, and asserts each one's peak memory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REAL_DATA, p002_zip
from tests.hardening.corpus import build, issue_inputs
from tests.ui.apptest import open_page

REPO = Path(__file__).resolve().parents[2]

#: What a read may add beyond twice its decoded float32 volume (voxels x 4 bytes: the volume itself plus one
#: working copy; DICOM keeps whole HU as int16, half that): decompression buffers, one member or page at a
#: time, parsed headers, library state.
FIXED_OVERHEAD_BYTES = 64 * 1024**2
SECONDS_PER_INPUT = 10.0


def measure(items: list[dict], folder: Path, cap_gb: float) -> dict[str, dict]:
    """Run ``tests.hardening.measure_reads`` on ``items`` in a fresh child; its per-input results."""
    manifest, out = folder / "manifest.json", folder / "results.json"
    manifest.write_text(json.dumps(items))
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "tests.hardening.measure_reads", str(manifest), str(out), str(cap_gb)]
    res = subprocess.run(command, capture_output=True, text=True, timeout=1800, env=env, cwd=REPO)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(out.read_text())


def as_items(folder: Path) -> list[dict]:
    return [{"id": f.name, "name": f.name.split("__", 1)[1], "file": str(f)} for f in sorted(folder.iterdir())]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, small_phantoms) -> Path:
    seed_dicom = sorted((small_phantoms / "dicom" / "PH0001").glob("*.dcm"))[5]
    seed_nifti = next((small_phantoms / "kaggle" / "ct_scans").glob("*.nii"))
    seed_png = next((small_phantoms / "png").glob("*/*.png"))
    folder = tmp_path_factory.mktemp("corpus")
    for k, (name, data) in enumerate(build(seed_dicom, seed_nifti, seed_png)):
        (folder / f"{k:03d}__{name}").write_bytes(data)
    return folder


def test_corpus_through_read_any(corpus, tmp_path):
    assert len(list(corpus.iterdir())) >= 200
    outcomes = measure(as_items(corpus), tmp_path, cap_gb=2.0)
    bad = {k: v for k, v in outcomes.items() if not v["outcome"].startswith(("ok:", "typed:"))}
    assert not bad, bad
    slow = {k: v for k, v in outcomes.items() if v["seconds"] > SECONDS_PER_INPUT}
    assert not slow, slow
    typed = sum(v["outcome"].startswith("typed:") for v in outcomes.values())
    assert typed >= 150  # most of the corpus is refused with a reason
    for name in ("good.png", "good.nii", "noext", "upper.DCM", "sixteen.png", "rgba.png", "cmyk.jpg"):
        hit = next(v for k, v in outcomes.items() if k.endswith("__" + name))
        assert hit["outcome"].startswith("ok:"), (name, hit)


def _bad_input_cases(folder: Path) -> list[dict]:
    """Every case of the typed-error table, as bytes or (folders, pipes, missing files) as a path."""
    from tests.ctmodels.imaging.test_bad_input import CASES

    items = []
    for name, builder, hint, _, _ in CASES:
        where = folder / name
        where.mkdir(parents=True)
        source = builder(where)
        if isinstance(source, Path):
            items.append({"id": f"case:{name}", "name": hint, "path": str(source)})
        else:
            (where / "input").write_bytes(source)
            items.append({"id": f"case:{name}", "name": hint, "file": str(where / "input")})
    return items


@pytest.mark.slow
def test_every_hostile_input_within_its_memory_and_time_bound(corpus, tmp_path):
    """Peak memory of each read ≤ 2 × its decoded volume + FIXED_OVERHEAD_BYTES, ≤ 10 s, typed or correct."""
    heavy = tmp_path / "heavy"
    heavy.mkdir()
    for k, (name, data) in enumerate(issue_inputs()):
        (heavy / f"{k:03d}__{name}").write_bytes(data)
    items = as_items(heavy) + _bad_input_cases(tmp_path / "cases") + as_items(corpus)
    if (REAL_DATA / "covid-ct-md").is_dir():
        (heavy / "P002.zip").write_bytes(p002_zip())
        items.append({"id": "real:P002.zip", "name": "P002.zip", "file": str(heavy / "P002.zip")})
    # first uses of each reader import their libraries' lazy parts: read one of each before measuring
    warm = [{"id": f"warmup:{i['id']}", "name": i["name"], "file": i["file"]}
            for i in as_items(corpus) if i["name"] in ("good.png", "good.nii", "upper.DCM", "cmyk.jpg")]
    results = measure(warm + items, tmp_path, cap_gb=4.0)
    report = []
    for key, r in results.items():
        if key.startswith("warmup:"):
            continue
        bound = 2 * r["decoded_bytes"] + FIXED_OVERHEAD_BYTES
        report.append((r["peak_bytes"] / max(bound, 1), key, r))
    report.sort(key=lambda t: t[0], reverse=True)
    print(f"\n{len(report)} inputs; heaviest reads (peak / bound):")
    for share, key, r in report[:12]:
        print(f"  {share:5.2f}  {r['peak_bytes'] / 2**20:7.1f} MB peak, {r['decoded_bytes'] / 2**20:6.1f} MB float32, "
              f"{r['seconds']:5.2f} s  {key}: {r['outcome'][:70]}")
    bad = {k: r for _, k, r in report if not r["outcome"].startswith(("ok:", "typed:"))}
    assert not bad, bad
    over = {k: r for share, k, r in report if share > 1.0}
    assert not over, over
    slow = {k: r for _, k, r in report if r["seconds"] > SECONDS_PER_INPUT}
    assert not slow, slow
    reads = {"nifti_9x4096.nii.gz": "ok:9x4096x4096", "nifti_bgzip_members.nii.gz": "ok:40x512x512",
             "nifti_float64_151m_voxels.nii.gz": "ok:576x512x512"}
    for key, r in results.items():
        for name, expected in reads.items():
            if key.endswith("__" + name):
                assert r["outcome"] == expected, (key, r)
    if (REAL_DATA / "covid-ct-md").is_dir():
        assert results["real:P002.zip"]["outcome"].startswith("ok:133x512x512"), results["real:P002.zip"]


@pytest.mark.slow
def test_corpus_through_the_compare_page(corpus, workspace_with_models):
    at = open_page("views/compare.py")
    at.segmented_control(key="cmp_mode").set_value("Upload").run()
    for f in sorted(corpus.iterdir()):
        at.file_uploader(key="cmp_upload").upload(f.name.split("__", 1)[1], f.read_bytes()).run()
        assert not at.exception, (f.name, at.exception)
        assert at.error or at.image, f.name  # an error message or the results


def test_corpus_sample_through_the_compare_page(corpus, workspace_with_models):
    at = open_page("views/compare.py")
    at.segmented_control(key="cmp_mode").set_value("Upload").run()
    files = sorted(corpus.iterdir())[::8]
    for f in files:
        at.file_uploader(key="cmp_upload").upload(f.name.split("__", 1)[1], f.read_bytes()).run()
        assert not at.exception, (f.name, at.exception)
        assert at.error or at.image, f.name
